/*
 * embedded.c - initdb, start, supervise and stop the private cluster.
 *
 * Everything here but ad_embedded_check() runs before the event loop starts
 * or after it ended, where blocking (fork/exec, waitpid, PQping) is fine.
 */
#include "embedded.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DB_NAME "actiond"
#define DB_USER "actiond"

static pid_t pg_pid = -1;
static char pgdata[PATH_MAX + 8], sockdir[PATH_MAX + 8], logpath[PATH_MAX + 16];
static char postgres_path[PATH_MAX], initdb_path[PATH_MAX];
static bool fsync_on, switch_user;
static uid_t run_uid;
static gid_t run_gid;
static time_t last_start;
static bool supervise; /* restart the server if it dies */

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* Creates dir (mode 0700) owned by the server's user; 0 if it exists. */
static int make_dir(const char *dir)
{
	if (mkdir(dir, 0700) && errno != EEXIST) {
		ad_log_error("cannot create %s: %s", dir, strerror(errno));
		return -1;
	}
	if (switch_user && chown(dir, run_uid, run_gid)) {
		ad_log_error("cannot hand %s to uid %u: %s", dir, (unsigned)run_uid,
			     strerror(errno));
		return -1;
	}
	return 0;
}

/* Forks argv as the server's user, output appended to the log. */
static pid_t spawn(char *const argv[])
{
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	/* child */
	if (switch_user && (setgroups(0, NULL) || setgid(run_gid) || setuid(run_uid)))
		_exit(126);
	{
		int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		int devnull = open("/dev/null", O_RDONLY);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (devnull >= 0)
			dup2(devnull, 0);
	}
	setsid(); /* a Ctrl-C meant for actiond must not hit the server first */
	/* If actiond dies without stopping it, the server quits too. */
	prctl(PR_SET_PDEATHSIG, SIGQUIT);
	execv(argv[0], argv);
	_exit(127);
}

static void log_tail(void)
{
	char buf[2048];
	FILE *f = fopen(logpath, "r");
	long size;
	size_t n;

	if (!f)
		return;
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	fseek(f, size > (long)sizeof(buf) - 1 ? size - (long)sizeof(buf) + 1 : 0, SEEK_SET);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	ad_log_error("last lines of %s:\n%s", logpath, buf);
}

static int run_initdb(void)
{
	char *argv[] = { initdb_path, "-D", pgdata, "-U", DB_USER, "-E", "UTF8",
			 "--no-locale", "--auth=trust",
			 fsync_on ? NULL : "--no-sync", NULL };
	int status;
	pid_t pid;

	ad_log_info("creating the embedded PostgreSQL cluster in %s", pgdata);
	pid = spawn(argv);
	if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0) {
		ad_log_error("initdb failed");
		log_tail();
		return -1;
	}
	return 0;
}

static int start_server(void)
{
	char sock_opt[PATH_MAX + 32], fsync_opt[32];
	char *argv[] = { postgres_path, "-D", pgdata, "-c", "listen_addresses=",
			 "-c", sock_opt, "-c", fsync_opt, "-c", "logging_collector=off",
			 NULL };

	snprintf(sock_opt, sizeof(sock_opt), "unix_socket_directories=%s", sockdir);
	snprintf(fsync_opt, sizeof(fsync_opt), "fsync=%s", fsync_on ? "on" : "off");
	pg_pid = spawn(argv);
	last_start = time(NULL);
	if (pg_pid < 0) {
		ad_log_error("cannot start postgres: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* Waits until the server answers, or it died, or 60 s passed. */
static int wait_ready(const char *conninfo)
{
	for (int i = 0; i < 1200; i++) {
		int status;

		if (PQping(conninfo) == PQPING_OK)
			return 0;
		if (waitpid(pg_pid, &status, WNOHANG) == pg_pid) {
			pg_pid = -1;
			ad_log_error("the embedded postgres exited during start-up");
			log_tail();
			return -1;
		}
		sleep_ms(50);
	}
	ad_log_error("the embedded postgres did not become ready");
	return -1;
}

static int ensure_database(void)
{
	char ci[PATH_MAX + 64];
	PGconn *c;
	PGresult *r;
	int ret = -1;

	snprintf(ci, sizeof(ci), "host=%s dbname=postgres user=%s", sockdir, DB_USER);
	c = PQconnectdb(ci);
	if (PQstatus(c) != CONNECTION_OK) {
		ad_log_error("embedded postgres: %s", PQerrorMessage(c));
		goto out;
	}
	r = PQexec(c, "SELECT 1 FROM pg_database WHERE datname = '" DB_NAME "'");
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
		ret = 0;
	} else {
		PQclear(r);
		r = PQexec(c, "CREATE DATABASE " DB_NAME);
		if (PQresultStatus(r) == PGRES_COMMAND_OK)
			ret = 0;
		else
			ad_log_error("cannot create the database: %s", PQerrorMessage(c));
	}
	PQclear(r);
out:
	PQfinish(c);
	return ret;
}

/*
 * Two actiond processes on one data directory would each supervise "their"
 * PostgreSQL and fight over it: the directory is locked (flock, released by
 * the kernel when this process ends, however it ends) and a second process
 * is refused with the first one's pid.
 */
static int lock_fd = -1;

static int lock_data_dir(const char *base)
{
	char path[PATH_MAX + 16], pid[32] = "";
	ssize_t n;

	snprintf(path, sizeof(path), "%s/actiond.lock", base);
	lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (lock_fd < 0) {
		ad_log_error("cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	if (flock(lock_fd, LOCK_EX | LOCK_NB)) {
		n = pread(lock_fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		ad_log_error("database.data_dir %s is in use by another actiond (pid %s); "
			     "stop it, or give this one its own data_dir",
			     base, *pid ? pid : "unknown");
		close(lock_fd);
		lock_fd = -1;
		return -1;
	}
	n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(lock_fd, 0) || pwrite(lock_fd, pid, (size_t)n, 0) != n)
		ad_log_warn("cannot write %s", path);
	return 0;
}

int ad_embedded_start(const struct ad_config *cfg, char *conninfo, size_t len)
{
	char base[PATH_MAX], version[PATH_MAX + 32];

	fsync_on = cfg->db_fsync;
	snprintf(postgres_path, sizeof(postgres_path), "%s/postgres", cfg->pg_bin);
	snprintf(initdb_path, sizeof(initdb_path), "%s/initdb", cfg->pg_bin);
	if (access(postgres_path, X_OK) || access(initdb_path, X_OK)) {
		ad_log_error("no PostgreSQL server binaries in %s (database.postgres_bin)",
			     cfg->pg_bin);
		return -1;
	}
	switch_user = geteuid() == 0;
	if (switch_user) {
		struct passwd *pw = getpwnam(cfg->pg_user);

		if (!pw) {
			ad_log_error("PostgreSQL will not run as root and user \"%s\" "
				     "(database.run_as) does not exist", cfg->pg_user);
			return -1;
		}
		run_uid = pw->pw_uid;
		run_gid = pw->pw_gid;
	}
	if (mkdir(cfg->data_dir, 0755) && errno != EEXIST) {
		ad_log_error("cannot create %s: %s", cfg->data_dir, strerror(errno));
		return -1;
	}
	if (!realpath(cfg->data_dir, base)) {
		ad_log_error("%s: %s", cfg->data_dir, strerror(errno));
		return -1;
	}
	if (lock_data_dir(base))
		return -1;
	/* The server's user must be able to pass through (whatever the umask). */
	if (switch_user) {
		struct stat st;

		if (stat(base, &st) == 0 && (st.st_mode & 0011) != 0011 &&
		    chmod(base, st.st_mode | 0011))
			ad_log_warn("cannot open %s to the server's user", base);
	}
	/* The socket path (run/.s.PGSQL.5432) must fit in sun_path. */
	if (strlen(base) > 80) {
		ad_log_error("database.data_dir %s is too long a path for a Unix socket",
			     base);
		return -1;
	}
	snprintf(pgdata, sizeof(pgdata), "%s/pg", base);
	snprintf(sockdir, sizeof(sockdir), "%s/run", base);
	snprintf(logpath, sizeof(logpath), "%s/postgres.log", base);
	if (switch_user) {
		/* The log is appended to by the server's user. */
		int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

		if (fd >= 0) {
			if (fchown(fd, run_uid, run_gid))
				ad_log_warn("cannot hand %s to the server's user", logpath);
			close(fd);
		}
	}
	if (make_dir(pgdata) || make_dir(sockdir))
		return -1;
	snprintf(version, sizeof(version), "%s/PG_VERSION", pgdata);
	if (access(version, F_OK) && run_initdb())
		return -1;
	if (start_server())
		return -1;
	snprintf(conninfo, len, "host=%s dbname=%s user=%s", sockdir, DB_NAME, DB_USER);
	{
		char ping[PATH_MAX + 64];

		snprintf(ping, sizeof(ping), "host=%s dbname=postgres user=%s", sockdir,
			 DB_USER);
		if (wait_ready(ping) || ensure_database()) {
			ad_embedded_stop();
			return -1;
		}
	}
	supervise = true;
	ad_log_info("embedded PostgreSQL running (pid %d, socket in %s)", (int)pg_pid,
		    sockdir);
	return 0;
}

void ad_embedded_check(void)
{
	int status;

	if (pg_pid > 0 && waitpid(pg_pid, &status, WNOHANG) == pg_pid) {
		ad_log_error("the embedded postgres exited (%s %d); restarting it",
			     WIFSIGNALED(status) ? "signal" : "status",
			     WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
		pg_pid = -1;
	}
	/* Restart at most once a second so a broken cluster does not spin. */
	if (supervise && pg_pid < 0 && time(NULL) > last_start)
		start_server();
}

void ad_embedded_stop(void)
{
	int status;

	supervise = false;
	if (pg_pid <= 0)
		return;
	kill(pg_pid, SIGINT); /* fast shutdown: abort sessions, checkpoint */
	for (int i = 0; i < 300; i++) {
		if (waitpid(pg_pid, &status, WNOHANG) == pg_pid) {
			pg_pid = -1;
			return;
		}
		sleep_ms(50);
	}
	ad_log_warn("the embedded postgres did not stop in 15 s; quitting it");
	kill(pg_pid, SIGQUIT);
	waitpid(pg_pid, &status, 0);
	pg_pid = -1;
}
