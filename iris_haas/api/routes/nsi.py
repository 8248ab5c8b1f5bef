"""The NSI requester endpoint: where the providers of NSI links send their callbacks (SOAP)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from iris_haas.api.deps import CoordinatorDep
from iris_haas.nsi import messages

requester = APIRouter(prefix="/nsi", tags=["nsi"])

_XML = {"text/xml": {"schema": {"type": "string"}}}
_FAULT = {"description": "not an NSI CS 2.0 callback for this requester: a SOAP fault with serviceException "
                         "00101 (PAYLOAD_ERROR)", "content": _XML}


@requester.post(
    "/requester", summary="NSI CS 2.0 callbacks from the providers of NSI links (SOAP 1.1)",
    response_class=Response, openapi_extra={"requestBody": {"required": True, "content": _XML}},
    responses={200: {"description": "the NSI acknowledgment", "content": _XML}, 422: _FAULT,
               404: {"description": "this coordinator has no NSI requester", "content": _XML}},
)
async def callback(request: Request, coord: CoordinatorDep) -> Response:
    """A confirmation or failure wakes the request waiting for it (by correlationId and
    connectionId); a notification is applied in the background. The answer is NSI's
    acknowledgment at once: a provider is never kept waiting on Iris's own work."""
    if coord.nsi is None:
        fault = messages.fault(None, messages.ServiceException("urn:ogf:network:iris:nsa:none", "00500",
                                                               "INTERNAL_ERROR: this coordinator is not an NSI requester"))
        return Response(fault, status_code=404, media_type=messages.CONTENT_TYPE)
    body = await request.body()
    try:
        ack = coord.nsi.deliver(body, request.client.host if request.client else None)
    except messages.MessageError as e:
        fault = messages.fault(None, messages.ServiceException(coord.nsi.nsa, "00101", f"PAYLOAD_ERROR: {e}"))
        return Response(fault, status_code=422, media_type=messages.CONTENT_TYPE)
    return Response(ack, media_type=messages.CONTENT_TYPE)
