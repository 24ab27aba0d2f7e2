/* Micro-workloads for the overhead benchmark (tests/bench/overhead.py): each prints the mean
 * nanoseconds one operation took over N operations.
 *
 *   workload open N       open() of a file that does not exist
 *   workload connect N    TCP connect() to a closed loopback port (refused), then close()
 *   workload forkexec N   fork(), execve("/bin/true") in the child, waitpid() in the parent
 *
 *   workload paced RATE SECONDS DIR FILES   open and close DIR/f0, DIR/f1, ... (FILES names, then
 *                                    round again) at RATE opens a second for SECONDS; prints
 *                                    how many it made (tests/bench/throughput.py)
 *
 *   workload statx DIR FILES         statx() DIR/f0 ... DIR/f(FILES-1), as the judge does for
 *                                    each open (sensor/_paths.c), the fastest of 5 passes: the
 *                                    syscall's own cost (tests/bench/throughput.py)
 *
 *   workload time PROGRAM [ARG...]   run PROGRAM (its output to /dev/null) and print the
 *                                    seconds it took: a tracked run is timed without the
 *                                    launcher's own start (tests/bench/agents.py)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int closed_port(void)
{
	/* Bound, never listened, closed: a connect to it is refused at once. */
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	bind(s, (struct sockaddr *)&a, sizeof(a));
	getsockname(s, (struct sockaddr *)&a, &len);
	close(s);
	return ntohs(a.sin_port);
}

static int time_program(char **argv)
{
	long long start = now_ns();
	pid_t pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);
		dup2(null, 1);
		execv(argv[0], argv);
		_exit(127);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	printf("%.6f\n", (double)(now_ns() - start) / 1e9);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* Catches up with the rate each millisecond, then sleeps: the opens come in steady bursts. */
static int paced(long rate, double seconds, const char *dir, long files)
{
	char path[4096];
	long n = 0;
	long long start = now_ns(), elapsed;
	struct timespec ms = {0, 1000000};

	while ((elapsed = now_ns() - start) < (long long)(seconds * 1e9)) {
		for (; n < rate * elapsed / 1000000000LL; n++) {
			snprintf(path, sizeof(path), "%s/f%ld", dir, n % files);
			int fd = open(path, O_RDONLY);
			if (fd >= 0)
				close(fd);
		}
		nanosleep(&ms, NULL);
	}
	printf("%ld\n", n);
	return 0;
}

static int statx_pass(const char *dir, long files)
{
	char **paths = calloc(files, sizeof(*paths));
	long long best = -1;
	struct statx st;

	for (long i = 0; i < files; i++)
		if (asprintf(&paths[i], "%s/f%ld", dir, i) < 0)
			return 1;
	for (int pass = 0; pass < 5; pass++) {
		long long start = now_ns();
		for (long i = 0; i < files; i++)
			if (statx(AT_FDCWD, paths[i], AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &st) < 0)
				return 1;
		if (best < 0 || now_ns() - start < best)
			best = now_ns() - start;
	}
	printf("%.1f\n", (double)best / files);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "time"))
		return time_program(argv + 2);
	if (argc == 4 && !strcmp(argv[1], "statx"))
		return statx_pass(argv[2], atol(argv[3]));
	if (argc == 6 && !strcmp(argv[1], "paced"))
		return paced(atol(argv[2]), atof(argv[3]), argv[4], atol(argv[5]));
	if (argc != 3) {
		fprintf(stderr, "usage: %s open|connect|forkexec N | paced RATE SECONDS DIR FILES | statx DIR FILES | "
			"time PROGRAM [ARG...]\n", argv[0]);
		return 64;
	}
	long n = atol(argv[2]);
	struct sockaddr_in target = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	target.sin_port = htons(closed_port());
	long long start = now_ns();
	for (long i = 0; i < n; i++) {
		if (!strcmp(argv[1], "open")) {
			int fd = open("/nonexistent/agent-sensor-bench", O_RDONLY);
			if (fd >= 0)
				close(fd);
		} else if (!strcmp(argv[1], "connect")) {
			int s = socket(AF_INET, SOCK_STREAM, 0);
			connect(s, (struct sockaddr *)&target, sizeof(target));
			close(s);
		} else if (!strcmp(argv[1], "forkexec")) {
			pid_t pid = fork();
			if (pid == 0) {
				execl("/bin/true", "true", (char *)NULL);
				_exit(127);
			}
			waitpid(pid, NULL, 0);
		} else {
			fprintf(stderr, "unknown workload %s\n", argv[1]);
			return 64;
		}
	}
	printf("%.1f\n", (double)(now_ns() - start) / n);
	return 0;
}
