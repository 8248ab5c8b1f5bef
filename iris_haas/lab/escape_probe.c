/* Iris's escape probe: the known ways out of a container (or a VM) tried as root inside an L1.
 *
 * Built once, statically (gcc -static), by iris_haas/lab/escapes.py and copied into the L1, since
 * the L1's busybox has no tool for setns, ptrace or finit_module. Arguments (any number of each):
 *   disk=MAJ:MIN   the L0's disk: mknod it, read it, mount it
 *   pid=N          an L0 process: ptrace it
 *   tcp=IP:PORT    a control-network service (an agent): connect to it
 *   icmp=IP        a control-network address: ping it
 * Prints one JSON line per attempt: {"name", "escaped", "errno", "detail"}. "escaped" is true only
 * when the attempt really succeeded: a mount that happened, a write to a host-owned file that
 * returned success, a setns that joined a namespace other than the L1's, a connection or an echo
 * reply, a ptrace attach; for module loading, a call that got past the kernel's permission check;
 * for a remount, a write to a host-global file below it (see remount_rw).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>

#define MAXARGS 64

static void report(const char *name, int escaped, int err, const char *detail)
{
	printf("{\"name\": \"%s\", \"escaped\": %s, \"errno\": %d, \"detail\": \"", name,
	       escaped ? "true" : "false", err);
	for (const char *c = detail; *c; c++) {
		if (*c == '"' || *c == '\\')
			putchar('\\');
		putchar((unsigned char)*c < 0x20 ? ' ' : *c);
	}
	printf("\"}\n");
	fflush(stdout);
}

/* append "what: result; " to a detail buffer */
static void note(char *buf, size_t len, const char *what, int rc, int err)
{
	size_t n = strlen(buf);
	snprintf(buf + n, len - n, "%s: %s; ", what, rc == 0 ? "ok" : strerror(err));
}

static void mknod_and_mount(const char *disk)
{
	char detail[512] = "";
	unsigned maj, min;
	int read_ok = 0, mounted = 0, err = 0;

	if (!disk || sscanf(disk, "%u:%u", &maj, &min) != 2) {
		report("mknod_host_disk", 0, EINVAL, "no disk given");
		report("mount_host_disk", 0, EINVAL, "no disk given");
		return;
	}
	unlink("/iris-probe-disk");
	int rc = mknod("/iris-probe-disk", S_IFBLK | 0600, makedev(maj, min));
	err = rc ? errno : 0;
	note(detail, sizeof detail, "mknod", rc, errno);
	if (rc == 0) {
		char sector[512];
		int fd = open("/iris-probe-disk", O_RDONLY);
		note(detail, sizeof detail, "open", fd < 0 ? -1 : 0, errno);
		if (fd >= 0) {
			read_ok = read(fd, sector, sizeof sector) == (ssize_t)sizeof sector;
			close(fd);
		}
	}
	report("mknod_host_disk", read_ok, err, detail);

	detail[0] = 0;
	mkdir("/iris-probe-mnt", 0700);
	rc = mount("/iris-probe-disk", "/iris-probe-mnt", "ext4", MS_RDONLY, NULL);
	err = rc ? errno : 0;
	note(detail, sizeof detail, "mount ext4", rc, errno);
	if (rc == 0) {
		mounted = 1;
		umount2("/iris-probe-mnt", MNT_DETACH);
	}
	unlink("/iris-probe-disk");
	rmdir("/iris-probe-mnt");
	report("mount_host_disk", mounted, err, detail);
}

/* write to a file the kernel treats as the host's; 1 if the write returned success */
static int try_write(const char *path, const char *data, char *detail, size_t len, int *err)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0) {
		*err = errno;
		note(detail, len, path, -1, errno);
		return 0;
	}
	ssize_t n = write(fd, data, strlen(data));
	int e = errno;
	close(fd);
	note(detail, len, path, n > 0 ? 0 : -1, e);
	if (n <= 0)
		*err = e;
	return n > 0;
}

/* write a file's own value back (a newline for an empty one): harmless where it succeeds, and
 * where it succeeds the caller could have written anything */
static int write_back(const char *path, char *detail, size_t len, int *err)
{
	char cur[256] = "";
	int fd = open(path, O_RDONLY);
	if (fd >= 0) {
		ssize_t n = read(fd, cur, sizeof cur - 1);
		cur[n > 0 ? n : 0] = 0;
		close(fd);
	}
	return try_write(path, cur[0] ? cur : "\n", detail, len, err);
}

static void cgroup_release_agent(void)
{
	const char *opts[] = {"none,name=irisprobe", "memory", "rdma", NULL};
	char detail[1024] = "", path[300];
	int escaped = 0, err = 0;

	mkdir("/iris-probe-cg", 0700);
	for (int i = 0; opts[i]; i++) {
		int rc = mount("cgroup", "/iris-probe-cg", "cgroup", 0, opts[i]);
		snprintf(path, sizeof path, "mount cgroup %s", opts[i]);
		note(detail, sizeof detail, path, rc, errno);
		if (rc != 0) {
			err = errno;
			continue;
		}
		try_write("/iris-probe-cg/notify_on_release", "1", detail, sizeof detail, &err);
		escaped |= write_back("/iris-probe-cg/release_agent", detail, sizeof detail, &err);
		umount2("/iris-probe-cg", MNT_DETACH);
	}
	rmdir("/iris-probe-cg");
	DIR *d = opendir("/sys/fs/cgroup");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/sys/fs/cgroup/%s/release_agent", e->d_name);
		if (access(path, F_OK) == 0)
			escaped |= write_back(path, detail, sizeof detail, &err);
	}
	if (d)
		closedir(d);
	report("cgroup_release_agent", escaped, escaped ? 0 : err, detail);
}

static void host_file_write(const char *name, const char *path, const char *data)
{
	char detail[512] = "";
	int err = 0;
	int ok = try_write(path, data, detail, sizeof detail, &err);
	report(name, ok, ok ? 0 : err, detail);
}

static void core_pattern(void)
{
	char detail[512] = "";
	int err = 0;
	int ok = write_back("/proc/sys/kernel/core_pattern", detail, sizeof detail, &err);
	report("write_core_pattern", ok, ok ? 0 : err, detail);
}

static void kernel_module(void)
{
	char detail[256] = "";
	int fd = open("/proc/self/exe", O_RDONLY);  /* not a module: past the permission check, ENOEXEC */
	long rc = syscall(SYS_finit_module, fd, "", 0);
	int e1 = errno;
	note(detail, sizeof detail, "finit_module", rc == 0 ? 0 : -1, e1);
	if (fd >= 0)
		close(fd);
	long rc2 = syscall(SYS_init_module, NULL, 0, "");
	int e2 = errno;
	note(detail, sizeof detail, "init_module", rc2 == 0 ? 0 : -1, e2);
	int past = rc == 0 || rc2 == 0 || (e1 != EPERM && e1 != EACCES && e1 != ENOSYS) ||
		   (e2 != EPERM && e2 != EACCES && e2 != ENOSYS);
	report("load_kernel_module", past, rc == 0 ? 0 : e1, detail);
}

static void open_by_handle(void)
{
	/* /dev/null is the host's devtmpfs (bound in): a handle to it, opened without a path, is
	 * the "shocker" way to the host's file systems */
	char detail[256] = "";
	struct { struct file_handle h; unsigned char b[MAX_HANDLE_SZ]; } fh;
	int mnt, escaped = 0, err = 0;
	fh.h.handle_bytes = MAX_HANDLE_SZ;
	int rc = name_to_handle_at(AT_FDCWD, "/dev/null", &fh.h, &mnt, 0);
	note(detail, sizeof detail, "name_to_handle_at /dev/null", rc, errno);
	int mfd = open("/dev/null", O_RDONLY);
	if (rc == 0 && mfd >= 0) {
		int fd = open_by_handle_at(mfd, &fh.h, O_RDONLY);
		err = fd < 0 ? errno : 0;
		note(detail, sizeof detail, "open_by_handle_at", fd < 0 ? -1 : 0, errno);
		if (fd >= 0) {
			escaped = 1;
			close(fd);
		}
	} else {
		err = errno;
	}
	if (mfd >= 0)
		close(mfd);
	report("open_by_handle_at", escaped, err, detail);
}

static ino_t ns_ino(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_ino : 0;
}

/* in a child (a setns changes the caller): join the namespace of every visible process */
static void setns_all(const char *type, int nstype)
{
	char self[64], detail[1024] = "", path[300];
	int fds[2];
	snprintf(self, sizeof self, "/proc/self/ns/%s", type);
	ino_t mine = ns_ino(self);
	if (pipe(fds) != 0)
		return;
	pid_t child = fork();
	if (child == 0) {
		close(fds[0]);
		int escaped = 0, err = 0, joined = 0, tried = 0;
		DIR *d = opendir("/proc");
		struct dirent *e;
		while (d && (e = readdir(d))) {
			if (e->d_name[0] < '0' || e->d_name[0] > '9')
				continue;
			snprintf(path, sizeof path, "/proc/%s/ns/%s", e->d_name, type);
			int fd = open(path, O_RDONLY);
			if (fd < 0)
				continue;
			tried++;
			if (setns(fd, nstype) == 0) {
				joined++;
				ino_t now = ns_ino(self);
				if (now != mine) {
					escaped = 1;
					note(detail, sizeof detail, path, 0, 0);
				}
			} else {
				err = errno;
			}
			close(fd);
		}
		size_t n = strlen(detail);
		snprintf(detail + n, sizeof detail - n, "%d processes, %d setns calls returned 0, last errno %s",
			 tried, joined, err ? strerror(err) : "none");
		char line[1200];
		snprintf(line, sizeof line, "%d %d %s", escaped, err, detail);
		if (write(fds[1], line, strlen(line)) < 0)
			_exit(1);
		_exit(0);
	}
	close(fds[1]);
	char line[1200] = "";
	ssize_t n = read(fds[0], line, sizeof line - 1);
	line[n > 0 ? n : 0] = 0;
	close(fds[0]);
	waitpid(child, NULL, 0);
	int escaped = 0, err = 0, off = 0;
	char name[32];
	sscanf(line, "%d %d %n", &escaped, &err, &off);
	snprintf(name, sizeof name, "setns_%s", type);
	report(name, escaped, err, line + off);
}

static void ptrace_host(char **pids, int n)
{
	char detail[512] = "", path[64], what[64];
	int escaped = 0, err = 0;
	for (int i = 0; i < n; i++) {
		int pid = atoi(pids[i]);
		snprintf(path, sizeof path, "/proc/%d", pid);
		snprintf(what, sizeof what, "ptrace %d", pid);
		if (access(path, F_OK) == 0) {
			note(detail, sizeof detail, what, -1, EEXIST);  /* that number is an L1 process here */
			continue;
		}
		long rc = ptrace(PTRACE_SEIZE, pid, NULL, NULL);
		err = rc ? errno : 0;
		note(detail, sizeof detail, what, rc ? -1 : 0, errno);
		if (rc == 0) {
			escaped = 1;
			ptrace(PTRACE_DETACH, pid, NULL, NULL);
		}
	}
	if (!n)
		snprintf(detail, sizeof detail, "no pid given");
	report("ptrace_host_process", escaped, err, detail);
}

/* A remount that succeeds is not yet a way out: in a user namespace, the L1's own sysfs and proc
 * (instances its namespaces own) may be remounted rw, and the kernel still checks every write
 * against the host's root. So: remount, then write a host-global file below it (its own value
 * back: harmless where it succeeds); escaped if that write succeeds. */
static void remount_rw(const char *name, const char *target, const char **files)
{
	char detail[512] = "";
	int err = 0, escaped = 0;
	int rc = mount(NULL, target, NULL, MS_REMOUNT | MS_BIND, NULL);
	if (rc != 0)
		err = errno;
	note(detail, sizeof detail, rc == 0 ? "remount rw (writes still checked)" : "remount rw", rc, errno);
	for (int i = 0; files[i]; i++)
		if (access(files[i], F_OK) == 0)
			escaped |= write_back(files[i], detail, sizeof detail, &err);
	report(name, escaped, escaped ? 0 : err, detail);
}

static int split_addr(const char *s, struct sockaddr_in *a)
{
	char ip[64];
	const char *colon = strrchr(s, ':');
	memset(a, 0, sizeof *a);
	a->sin_family = AF_INET;
	snprintf(ip, sizeof ip, "%.*s", colon ? (int)(colon - s) : (int)strlen(s), s);
	a->sin_port = htons(colon ? atoi(colon + 1) : 0);
	return inet_pton(AF_INET, ip, &a->sin_addr) == 1 ? 0 : -1;
}

static void tcp_connect(char **addrs, int n)
{
	char detail[1024] = "";
	int escaped = 0, err = 0;
	for (int i = 0; i < n; i++) {
		struct sockaddr_in a;
		if (split_addr(addrs[i], &a) != 0)
			continue;
		int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		int rc = connect(s, (struct sockaddr *)&a, sizeof a), e = errno;
		if (rc != 0 && e == EINPROGRESS) {
			struct pollfd p = {s, POLLOUT, 0};
			socklen_t l = sizeof e;
			if (poll(&p, 1, 1000) == 1) {
				getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &l);
				rc = e ? -1 : 0;
			} else {
				e = ETIMEDOUT;
			}
		}
		close(s);
		note(detail, sizeof detail, addrs[i], rc, e);
		if (rc == 0)
			escaped = 1;
		else
			err = e;
	}
	report("connect_control_network", escaped, escaped ? 0 : err, n ? detail : "no address given");
}

static unsigned short cksum(void *p, int len)
{
	unsigned long sum = 0;
	unsigned short *w = p;
	for (; len > 1; len -= 2)
		sum += *w++;
	if (len)
		sum += *(unsigned char *)w;
	sum = (sum >> 16) + (sum & 0xffff);
	return ~(sum + (sum >> 16));
}

static void icmp_echo(char **addrs, int n)
{
	char detail[1024] = "";
	int escaped = 0, err = 0;
	for (int i = 0; i < n; i++) {
		struct sockaddr_in a;
		if (split_addr(addrs[i], &a) != 0)
			continue;
		int s = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP), got = 0, e = 0;
		if (s < 0) {
			note(detail, sizeof detail, addrs[i], -1, errno);
			err = errno;
			continue;
		}
		struct icmphdr h = {.type = ICMP_ECHO};
		h.un.echo.id = htons(getpid() & 0xffff);
		h.un.echo.sequence = htons(1);
		h.checksum = cksum(&h, sizeof h);
		if (sendto(s, &h, sizeof h, 0, (struct sockaddr *)&a, sizeof a) < 0)
			e = errno;
		for (int tries = 0; !e && !got && tries < 10; tries++) {
			struct pollfd p = {s, POLLIN, 0};
			if (poll(&p, 1, 100) != 1)
				continue;
			unsigned char buf[1500];
			struct sockaddr_in from;
			socklen_t fl = sizeof from;
			ssize_t len = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
			struct iphdr *ip = (struct iphdr *)buf;
			if (len > (ssize_t)(ip->ihl * 4 + sizeof h) && from.sin_addr.s_addr == a.sin_addr.s_addr) {
				struct icmphdr *r = (struct icmphdr *)(buf + ip->ihl * 4);
				got = r->type == ICMP_ECHOREPLY && r->un.echo.id == h.un.echo.id;
			}
		}
		close(s);
		if (!got && !e)
			e = ETIMEDOUT;
		note(detail, sizeof detail, addrs[i], got ? 0 : -1, e);
		escaped |= got;
		if (!got)
			err = e;
	}
	report("ping_control_network", escaped, escaped ? 0 : err, n ? detail : "no address given");
}

int main(int argc, char **argv)
{
	char *disk = NULL, *pids[MAXARGS], *tcp[MAXARGS], *icmp[MAXARGS];
	int npid = 0, ntcp = 0, nicmp = 0;
	for (int i = 1; i < argc; i++) {
		if (!strncmp(argv[i], "disk=", 5))
			disk = argv[i] + 5;
		else if (!strncmp(argv[i], "pid=", 4) && npid < MAXARGS)
			pids[npid++] = argv[i] + 4;
		else if (!strncmp(argv[i], "tcp=", 4) && ntcp < MAXARGS)
			tcp[ntcp++] = argv[i] + 4;
		else if (!strncmp(argv[i], "icmp=", 5) && nicmp < MAXARGS)
			icmp[nicmp++] = argv[i] + 5;
	}
	mknod_and_mount(disk);
	cgroup_release_agent();
	host_file_write("write_sysrq_trigger", "/proc/sysrq-trigger", "h");
	core_pattern();
	kernel_module();
	open_by_handle();
	setns_all("net", CLONE_NEWNET);
	setns_all("mnt", CLONE_NEWNS);
	setns_all("pid", CLONE_NEWPID);
	setns_all("user", CLONE_NEWUSER);
	setns_all("cgroup", CLONE_NEWCGROUP);
	ptrace_host(pids, npid);
	const char *sys_files[] = {"/sys/kernel/uevent_helper", "/sys/kernel/mm/ksm/run",
				   "/sys/kernel/mm/transparent_hugepage/khugepaged/defrag", NULL};
	const char *proc_files[] = {"/proc/sys/kernel/modprobe", "/proc/sys/vm/overcommit_memory",
				    "/proc/sys/kernel/core_pattern", NULL};
	remount_rw("remount_sys_rw", "/sys", sys_files);
	remount_rw("remount_proc_sys_rw", "/proc/sys", proc_files);
	tcp_connect(tcp, ntcp);
	icmp_echo(icmp, nicmp);
	return 0;
}
