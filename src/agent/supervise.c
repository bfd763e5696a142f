/* Engine supervision: a thread that compares the desired instances with the
 * processes it runs, every 200 ms or when the desired set changes. */
#include "agent/supervise.h"
#include "agent/emetrics.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "agent/diagnose.h"
#include "base/buf.h"
#include "base/engine_kind.h"
#include "base/json.h"
#include "base/log.h"
#include "base/mem.h"
#include "base/secret.h"
#include "base/util.h"
#include "http/client.h"

#define HEALTHY_RESET_MS (10 * 60 * 1000)
#define MAX_BACKOFF_MS (5 * 60 * 1000)
#define LOG_ROTATE_BYTES (10u << 20)
#define TAIL_LINES 20

struct proc {
	char *id;           /* instance id */
	char *role;         /* "leader" (serves the model) or "follower" (rpc-server) */
	char *key;          /* what it was started for: changes mean restart */
	pid_t pid;          /* 0: not running */
	bool child;         /* ours to waitpid; adopted ones are polled */
	unsigned long long start_time; /* /proc/pid/stat field 22 */
	char *cmdline;      /* NUL-separated args joined by '\x1f' */
	int port;
	int aux_port;       /* vLLM multi-node: the leader's master port */
	char state[16];     /* starting, running, error, restarting, stopping */
	char *message;
	char *cause, *fix, *log_tail;
	int exit_status;    /* -1: none yet; 128+N for a signal */
	int restarts;
	int64_t next_start; /* mono ms, for restarts */
	int64_t started, healthy_since, stop_deadline, next_probe;
	bool wanted;
	bool waiting;       /* not started for want of something the server will send */
	json_t *desired;    /* the instance from the snapshot */
	int64_t next_metrics; /* mono ms: the next read of the engine's /metrics */
	char stats_model[128]; /* under mu: the model the stats are of */
	struct cr_engine_stats stats; /* under mu: its metrics as last read */
	struct proc *next;
};

struct cr_supervisor {
	struct cr_supervisor_config cfg;
	char *data_dir, *engine_host, *state_path, *log_dir;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t wake;
	bool stopping, changed, have_snapshot;
	bool kick;          /* a new snapshot: retry what was waiting now */
	json_t *desired;    /* id -> instance (under mu) */
	char *worker_id;    /* under mu: the watcher thread replaces it */
	char *self_id;      /* the supervisor thread's copy, taken with each snapshot */
	/* written by the supervisor thread; the fields the reporter reads (see
	 * cr_supervisor_report) are written under mu */
	struct proc *procs;
};

/* ---- small helpers ---- */

static void set_str(char **slot, const char *s)
{
	cr_str_replace(slot, s ? s : "");
}

static unsigned long long proc_start_time(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	char *p = strrchr(buf, ')'); /* the command name may contain spaces */
	if (!p)
		return 0;
	unsigned long long v = 0;
	int field = 2;
	for (char *save = NULL, *t = strtok_r(p + 1, " ", &save); t; t = strtok_r(NULL, " ", &save))
		if (++field == 22) {
			v = strtoull(t, NULL, 10);
			break;
		}
	return v;
}

static char *proc_cmdline(pid_t pid)
{
	char path[64], *text = NULL;
	size_t len = 0;
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	if (cr_file_read(path, 1 << 16, &text, &len, NULL) != 0)
		return NULL;
	for (size_t i = 0; i + 1 < len; i++)
		if (text[i] == '\0')
			text[i] = '\x1f';
	return text;
}

static char *join_argv(char **argv)
{
	char *s = cr_xstrdup("");
	for (size_t i = 0; argv[i]; i++) {
		char *n = cr_xasprintf("%s%s%s", s, i ? "\x1f" : "", argv[i]);
		free(s);
		s = n;
	}
	return s;
}

/* The command line as a person (or a shell) reads it: arguments with spaces
 * or shell characters in single quotes. */
static char *shell_line(char **argv)
{
	struct cr_buf b = CR_BUF_INIT(1 << 20);
	for (size_t i = 0; argv[i]; i++) {
		const char *a = argv[i];
		bool plain = *a && strspn(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,+@%") ==
					  strlen(a);
		cr_buf_adds(&b, i ? " " : "");
		if (plain) {
			cr_buf_adds(&b, a);
			continue;
		}
		cr_buf_adds(&b, "'");
		for (const char *c = a; *c; c++)
			cr_buf_adds(&b, *c == '\'' ? "'\\''" : (char[]){ *c, 0 });
		cr_buf_adds(&b, "'");
	}
	return cr_buf_detach(&b);
}

static void set_exit(struct cr_supervisor *s, struct proc *p, int status)
{
	pthread_mutex_lock(&s->mu);
	p->exit_status = status;
	pthread_mutex_unlock(&s->mu);
}

static bool alive(struct cr_supervisor *s, struct proc *p)
{
	if (!p->pid)
		return false;
	if (p->child) {
		int st;
		pid_t r = waitpid(p->pid, &st, WNOHANG);
		if (r == 0)
			return true;
		if (r == p->pid)
			set_exit(s, p, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
		return false;
	}
	if (kill(p->pid, 0) == 0 && proc_start_time(p->pid) == p->start_time)
		return true;
	set_exit(s, p, -1); /* not our child: its status is not ours to read */
	return false;
}

/* The process and port the reporter shows, changed under the lock. */
static void set_pid(struct cr_supervisor *s, struct proc *p, pid_t pid)
{
	pthread_mutex_lock(&s->mu);
	p->pid = pid;
	pthread_mutex_unlock(&s->mu);
}

static bool port_free(const char *host, int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
		a.sin_addr.s_addr = htonl(INADDR_ANY);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

static int pick_port(struct cr_supervisor *s)
{
	for (int port = s->cfg.port_lo; port <= s->cfg.port_hi; port++) {
		bool used = false;
		for (struct proc *p = s->procs; p && !used; p = p->next)
			used = p->port == port && p->pid;
		if (!used && port_free(s->engine_host, port))
			return port;
	}
	return 0;
}

static int pick_port_excluding2(struct cr_supervisor *s, int a, int b)
{
	for (int port = s->cfg.port_hi; port >= s->cfg.port_lo; port--) { /* from the top: away from engines */
		bool used = port == a || port == b;
		for (struct proc *p = s->procs; p && !used; p = p->next)
			used = p->port == port && p->pid;
		if (!used && port_free(s->engine_host, port))
			return port;
	}
	return 0;
}

static int pick_port_excluding(struct cr_supervisor *s, int a)
{
	return pick_port_excluding2(s, a, a);
}

/* Nodes that `ray status --address addr` lists (0 when it fails). */
static size_t ray_nodes(struct cr_supervisor *s, const char *addr)
{
	char *exe = cr_engine_locate(cr_engines_find(s->cfg.catalog, "ray"));
	size_t nodes = 0;
	if (exe) {
		char *argv[] = { (char *)exe, "status", "--address", (char *)addr, NULL };
		char *out = NULL;
		if (cr_run_output(argv, 5000, &out) == 0)
			for (const char *q = out; (q = strstr(q, " node_")); q++)
				nodes++;
		free(out);
	}
	free(exe);
	return nodes;
}

/* The last n lines of a file. */
static char *tail_lines(const char *path, int n)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return cr_xstrdup("");
	fseek(f, 0, SEEK_END);
	long size = ftell(f), from = size > 16384 ? size - 16384 : 0;
	fseek(f, from, SEEK_SET);
	char *buf = cr_xmalloc(16385);
	size_t len = fread(buf, 1, 16384, f);
	fclose(f);
	buf[len] = '\0';
	char *p = buf + len;
	int lines = 0;
	while (p > buf && lines <= n)
		if (*--p == '\n' && p + 1 < buf + len)
			lines++;
	if (lines > n)
		p++;
	char *out = cr_xstrdup(p);
	free(buf);
	return out;
}

/* ---- adoption state ---- */

static void save_state(struct cr_supervisor *s)
{
	json_t *arr = json_array();
	for (struct proc *p = s->procs; p; p = p->next)
		if (p->pid)
			json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:i,s:I,s:s,s:i}", "id", p->id, "role", p->role,
							     "key", p->key, "pid", (int)p->pid, "start_time",
							     (json_int_t)p->start_time, "cmdline", p->cmdline ? p->cmdline : "",
							     "port", p->port));
	char *text = json_dumps(arr, JSON_INDENT(1));
	cr_file_write(s->state_path, text, strlen(text), 0600, NULL);
	free(text);
	json_decref(arr);
}

static struct proc *proc_new(struct cr_supervisor *s, const char *id, const char *role)
{
	struct proc *p = cr_xcalloc(1, sizeof(*p));
	p->id = cr_xstrdup(id);
	p->role = cr_xstrdup(role);
	p->key = cr_xstrdup("");
	p->message = cr_xstrdup("");
	p->exit_status = -1;
	pthread_mutex_lock(&s->mu); /* the reporter walks the list */
	p->next = s->procs;
	s->procs = p;
	pthread_mutex_unlock(&s->mu);
	return p;
}

static void load_state(struct cr_supervisor *s)
{
	char *text = NULL;
	size_t len;
	if (cr_file_read(s->state_path, 1 << 20, &text, &len, NULL) != 0)
		return;
	json_t *arr = json_loadb(text, len, 0, NULL);
	free(text);
	size_t i;
	json_t *e;
	json_array_foreach(arr, i, e) {
		pid_t pid = (pid_t)cr_json_get_int(e, "pid", 0);
		unsigned long long st = (unsigned long long)cr_json_get_int(e, "start_time", 0);
		char *cmd = pid > 0 ? proc_cmdline(pid) : NULL;
		bool same = pid > 0 && proc_start_time(pid) == st && cmd && !strcmp(cmd, cr_json_get_str(e, "cmdline", ""));
		if (same) {
			struct proc *p = proc_new(s, cr_json_get_str(e, "id", "?"), cr_json_get_str(e, "role", "leader"));
			p->pid = pid;
			p->start_time = st;
			p->cmdline = cmd;
			cmd = NULL;
			p->port = (int)cr_json_get_int(e, "port", 0);
			set_str(&p->key, cr_json_get_str(e, "key", ""));
			snprintf(p->state, sizeof(p->state), "starting");
			set_str(&p->message, "adopted after a worker restart");
			p->started = cr_mono_ms();
			cr_info("instance %s: adopted its engine (pid %d, port %d)", p->id, (int)pid, p->port);
		}
		free(cmd);
	}
	json_decref(arr);
}

/* ---- start, stop ---- */

static void set_state(struct cr_supervisor *s, struct proc *p, const char *state, const char *msg)
{
	pthread_mutex_lock(&s->mu);
	if (strcmp(p->state, state) != 0 || strcmp(p->message, msg ? msg : "") != 0) {
		snprintf(p->state, sizeof(p->state), "%s", state);
		set_str(&p->message, msg);
		s->changed = true;
		if (s->cfg.on_change)
			s->cfg.on_change(s->cfg.arg);
	}
	pthread_mutex_unlock(&s->mu);
}

static const char *gpu_env(const char *vendor)
{
	return !strcmp(vendor, "amd") ? "HIP_VISIBLE_DEVICES" : "CUDA_VISIBLE_DEVICES";
}

/* vLLM or SGLang over several workers. */
static bool is_multinode(json_t *pl)
{
	const char *engine = cr_json_get_str(pl, "engine", "");
	return cr_engine_vllm_like(engine) && json_array_size(json_object_get(pl, "workers")) > 1;
}

/* Asked for vLLM's own multi-node launcher (engine_args
 * "--distributed-executor-backend mp") instead of Ray. */
static bool wants_mp(json_t *inst)
{
	json_t *a = json_object_get(inst, "engine_args");
	for (size_t i = 0; i + 1 < json_array_size(a); i++)
		if (!strcmp(json_string_value(json_array_get(a, i)), "--distributed-executor-backend") &&
		    !strcmp(json_string_value(json_array_get(a, i + 1)), "mp"))
			return true;
	return false;
}

/* vLLM or SGLang over several workers through a per-instance Ray cluster. */
static bool is_ray_group(json_t *inst)
{
	return is_multinode(json_object_get(inst, "placement")) && !wants_mp(inst);
}

/* This worker's entry in the instance's placement. */
static json_t *my_member(struct cr_supervisor *s, json_t *inst)
{
	size_t i;
	json_t *w;
	json_array_foreach(json_object_get(json_object_get(inst, "placement"), "workers"), i, w)
		if (!strcmp(cr_json_get_str(w, "id", ""), s->self_id))
			return w;
	return NULL;
}

/* ---- launch commands ----
 * Four launch modes, one builder each, over what every one needs (struct
 * launch): a node of the instance's own Ray cluster, an RPC follower
 * (rpc-server), and the engine itself (llama.cpp alone or as RPC leader, vLLM
 * or SGLang alone, over Ray, or with their own multi-node launcher). Each
 * returns argv, or NULL with why saying what it waits for or what is wrong. */

struct launch {
	struct cr_supervisor *s;
	struct proc *p;
	json_t *inst, *pl, *me;
	const struct cr_engine *e;
	char *exe;            /* owned */
	const char *addr;     /* this node's address for its peers */
	json_t *head;         /* the Ray head {"host","port"}, or NULL */
	char head_addr[300];
	char *why;
	size_t n;
};

static char **argv_of(const char *const *src)
{
	size_t na = 0;
	while (src[na])
		na++;
	char **argv = cr_xcalloc(na + 1, sizeof(char *));
	for (size_t j = 0; j < na; j++)
		argv[j] = cr_xstrdup(src[j]);
	return argv;
}

/* `ray start`: the head on the leader, the others joining it. */
static char **argv_ray_node(struct launch *l)
{
	struct cr_supervisor *s = l->s;
	struct proc *p = l->p;
	if (!strcmp(p->role, "ray-worker") && !l->head) {
		snprintf(l->why, l->n, "waiting for the Ray head on the leader");
		return NULL;
	}
	char gpus[16], a[16], b[16], c[16];
	snprintf(gpus, sizeof(gpus), "%zu", json_array_size(json_object_get(l->me, "gpus")));
	int p2 = pick_port_excluding(s, p->port), p3 = pick_port_excluding2(s, p->port, p2);
	snprintf(a, sizeof(a), "%d", p->port);
	snprintf(b, sizeof(b), "%d", p2);
	snprintf(c, sizeof(c), "%d", p3);
	const char *head_argv[] = { l->exe, "start", "--head", "--port", a, "--node-ip-address", l->addr, "--num-gpus", gpus,
				    "--node-manager-port", b, "--object-manager-port", c, "--block", NULL };
	const char *join_argv[] = { l->exe, "start", "--address", l->head_addr, "--node-ip-address", l->addr, "--num-gpus",
				    gpus, "--node-manager-port", b, "--object-manager-port", c, "--block", NULL };
	return argv_of(!strcmp(p->role, "ray-head") ? head_argv : join_argv);
}

/* rpc-server: needs no model file. */
static char **argv_rpc_follower(struct launch *l)
{
	json_t *vars = json_pack("{s:s,s:s,s:i}", "exe", l->exe, "host", l->s->engine_host, "port", l->p->port);
	struct cr_err err = CR_ERR_INIT;
	char **argv = cr_engine_expand(l->e->command, vars, &err);
	json_decref(vars);
	if (!argv)
		snprintf(l->why, l->n, "%s", err.message);
	return argv;
}

/* llama.cpp's --tensor-split: RPC devices first, in --rpc order, then this
 * node's GPUs; and --rpc itself. Growable: many followers never truncate. */
static void llama_lists(struct launch *l, struct cr_buf *ts, struct cr_buf *rpc)
{
	size_t i, k;
	json_t *x, *w;
	if (json_array_size(json_object_get(l->pl, "workers")) > 1 || json_array_size(json_object_get(l->me, "gpus")) > 1) {
		json_array_foreach(json_object_get(l->inst, "followers"), i, x) {
			double share = 0;
			json_array_foreach(json_object_get(l->pl, "workers"), k, w)
				if (!strcmp(cr_json_get_str(w, "id", ""), cr_json_get_str(x, "id", "?"))) {
					size_t g;
					json_t *gpu;
					json_array_foreach(json_object_get(w, "gpus"), g, gpu)
						share += json_number_value(json_object_get(gpu, "split"));
				}
			cr_buf_addf(ts, "%s%.3f", ts->len ? "," : "", share);
		}
		json_array_foreach(json_object_get(l->me, "gpus"), i, x)
			cr_buf_addf(ts, "%s%.3f", ts->len ? "," : "", json_number_value(json_object_get(x, "split")));
	}
	json_array_foreach(json_object_get(l->inst, "followers"), i, x)
		cr_buf_addf(rpc, "%s%s:%lld", i ? "," : "", cr_json_get_str(x, "host", ""), cr_json_get_int(x, "port", 0));
}

/* vLLM's own multi-node launcher: every node with its rank, followers headless. */
static void add_mp_args(struct launch *l, json_t *master, json_t *extra)
{
	struct cr_supervisor *s = l->s;
	struct proc *p = l->p;
	size_t rank = 0, k;
	json_t *x;
	json_array_foreach(json_object_get(l->pl, "workers"), k, x)
		if (!strcmp(cr_json_get_str(x, "id", ""), s->self_id))
			rank = k;
	if (!p->aux_port) {
		int aux = pick_port_excluding(s, p->port);
		pthread_mutex_lock(&s->mu);
		p->aux_port = aux;
		pthread_mutex_unlock(&s->mu);
	}
	json_array_append_new(extra, json_string("--nnodes"));
	json_array_append_new(extra, json_sprintf("%zu", json_array_size(json_object_get(l->pl, "workers"))));
	json_array_append_new(extra, json_string("--node-rank"));
	json_array_append_new(extra, json_sprintf("%zu", rank));
	json_array_append_new(extra, json_string("--master-addr"));
	json_array_append_new(extra, json_string(master ? cr_json_get_str(master, "host", l->addr) : l->addr));
	json_array_append_new(extra, json_string("--master-port"));
	json_array_append_new(extra, json_sprintf("%lld", master ? cr_json_get_int(master, "port", 0)
								 : (long long)p->aux_port));
	if (!strcmp(p->role, "headless"))
		json_array_append_new(extra, json_string("--headless"));
}

/* The engine: the catalog's command with this instance's values, the
 * user's engine arguments, and the multi-node launcher's when it is used. */
static char **argv_engine(struct launch *l)
{
	struct cr_supervisor *s = l->s;
	json_t *inst = l->inst, *pl = l->pl;
	const char *engine = cr_json_get_str(pl, "engine", "llama.cpp");
	size_t members = json_array_size(json_object_get(pl, "workers"));
	if (members > 1 && cr_engine_kind(engine) == CR_ENGINE_LLAMA &&
	    json_array_size(json_object_get(inst, "followers")) < members - 1) {
		snprintf(l->why, l->n, "waiting for %zu RPC follower(s) to run", members - 1);
		return NULL;
	}
	bool via_ray = is_ray_group(inst), via_mp = is_multinode(pl) && !via_ray;
	json_t *master = json_object_get(inst, "master");
	if (json_is_null(master))
		master = NULL;
	if (via_mp && !strcmp(l->p->role, "headless") && !master) {
		snprintf(l->why, l->n, "waiting for the leader's master address");
		return NULL;
	}
	if (via_ray) { /* the engine starts once Ray sees every node of the group */
		if (!l->head) {
			snprintf(l->why, l->n, "waiting for the Ray head");
			return NULL;
		}
		size_t have = ray_nodes(s, l->head_addr);
		if (have < members) {
			snprintf(l->why, l->n, "waiting for Ray to see every node (%zu of %zu)", have, members);
			return NULL;
		}
	}
	const char *src = cr_json_get_str(inst, "source", "");
	char *model = !strncmp(src, "http", 4) ? cr_files_local_path(s->cfg.files, src) : cr_xstrdup(src);
	if (!model) {
		snprintf(l->why, l->n, "waiting for the model download");
		return NULL;
	}
	struct cr_buf ts = CR_BUF_INIT(1 << 20), rpc = CR_BUF_INIT(1 << 20);
	llama_lists(l, &ts, &rpc);
	json_t *vars = json_pack("{s:s,s:s,s:s,s:i,s:I,s:I,s:I,s:s,s:s,s:s,s:I,s:I,s:s,s:s}", "exe", l->exe, "model", model,
				 "host", s->engine_host, "port", l->p->port, "ctx", (json_int_t)cr_json_get_int(pl, "n_ctx", 0),
				 "parallel", (json_int_t)cr_json_get_int(pl, "parallel", 1), "ngl",
				 (json_int_t)cr_json_get_int(pl, "ngl", 0), "tensor_split", cr_buf_str(&ts), "rpc",
				 cr_buf_str(&rpc), "name", cr_json_get_str(inst, "model", "model"), "tp",
				 (json_int_t)cr_json_get_int(pl, "tp", 1), "pp", (json_int_t)cr_json_get_int(pl, "pp", 1),
				 "gpu_util", "0.90", "executor", via_ray ? "ray" : "");
	json_t *gu = json_object_get(pl, "gpu_memory_utilization");
	if (json_is_number(gu))
		json_object_set_new(vars, "gpu_util", json_sprintf("%.2f", json_number_value(gu)));
	struct cr_err err = CR_ERR_INIT;
	char **argv = cr_engine_expand(l->e->command, vars, &err);
	json_decref(vars);
	cr_buf_release(&ts);
	cr_buf_release(&rpc);
	free(model);
	if (!argv) {
		snprintf(l->why, l->n, "%s", err.message);
		return NULL;
	}
	/* the user's engine arguments go last, then the launcher's */
	json_t *extra = json_deep_copy(json_is_array(json_object_get(inst, "engine_args"))
				       ? json_object_get(inst, "engine_args") : json_array());
	if (!extra)
		extra = json_array();
	if (via_mp)
		add_mp_args(l, master, extra);
	size_t na = 0, i;
	json_t *x;
	while (argv[na])
		na++;
	const char *key = cr_json_get_str(inst, "engine_key", NULL);
	bool key_arg = key && !l->e->key_env && l->e->key_arg; /* an engine that takes its key as a flag */
	argv = cr_xrealloc(argv, (na + json_array_size(extra) + 3) * sizeof(char *));
	json_array_foreach(extra, i, x)
		argv[na++] = cr_xstrdup(json_string_value(x) ? json_string_value(x) : "");
	if (key_arg) {
		argv[na++] = cr_xstrdup(l->e->key_arg);
		argv[na++] = cr_xstrdup(key);
	}
	argv[na] = NULL;
	json_decref(extra);
	return argv;
}

/* The environment: ours without device visibility, the engine's own, the
 * devices of this node's member, and the Ray address for the engine. */
static char **launch_env(struct launch *l)
{
	size_t ne = 0;
	extern char **environ;
	while (environ[ne])
		ne++;
	size_t nown = 0;
	while (l->e->env && l->e->env[nown])
		nown++;
	char **env = cr_xcalloc(ne + nown + 10, sizeof(char *)); /* the 10: devices, Ray, key, the end */
	size_t k = 0;
	for (size_t j = 0; j < ne; j++)
		if (strncmp(environ[j], "CUDA_VISIBLE_DEVICES=", 21) && strncmp(environ[j], "HIP_VISIBLE_DEVICES=", 20) &&
		    strncmp(environ[j], "ROCR_VISIBLE_DEVICES=", 21))
			env[k++] = cr_xstrdup(environ[j]);
	for (size_t j = 0; j < nown; j++)
		env[k++] = cr_xstrdup(l->e->env[j]);
	/* the instance's secret: the engine answers only requests that carry it
	 * (the gateway's); never in argv where every local user sees it */
	const char *key = !strcmp(l->p->role, "leader") || !strcmp(l->p->role, "headless")
				  ? cr_json_get_str(l->inst, "engine_key", NULL) : NULL;
	if (key) {
		env[k++] = cr_xasprintf("CORRAL_ENGINE_KEY=%s", key);
		if (l->e->key_env)
			env[k++] = cr_xasprintf("%s=%s", l->e->key_env, key);
	}
	struct cr_buf devs[2] = { CR_BUF_INIT(1 << 16), CR_BUF_INIT(1 << 16) };
	size_t i;
	json_t *x;
	json_array_foreach(json_object_get(l->me, "gpus"), i, x) {
		int v = !strcmp(cr_json_get_str(x, "vendor", "nvidia"), "amd");
		cr_buf_addf(&devs[v], "%s%lld", devs[v].len ? "," : "", cr_json_get_int(x, "index", 0));
	}
	env[k++] = cr_xasprintf("%s=%s", gpu_env("nvidia"), cr_buf_str(&devs[0])); /* empty: no NVIDIA GPU for it */
	env[k++] = cr_xasprintf("%s=%s", gpu_env("amd"), cr_buf_str(&devs[1]));
	env[k++] = cr_xasprintf("ROCR_VISIBLE_DEVICES=%s", cr_buf_str(&devs[1]));
	if (l->head && strncmp(l->p->role, "ray", 3) != 0)
		env[k++] = cr_xasprintf("RAY_ADDRESS=%s", l->head_addr);
	env[k] = NULL;
	cr_buf_release(&devs[0]);
	cr_buf_release(&devs[1]);
	return env;
}

/* Engine flags that make an engine read or write a file of its node's
 * choosing, or fetch one: a Corral admin must not become able to read or
 * write any file an engine's user can by deploying a model. Refused unless
 * the worker allows them (--allow-engine-args). */
static const char *const file_args[] = {
	"--log-file", "--slot-save-path", "-m", "--model", "-mu", "--model-url", "-hf", "-hfr", "--hf-repo", "-hff",
	"--hf-file", "-md", "--model-draft", "--mmproj", "--mmproj-url", "--lora", "--lora-scaled", "--control-vector",
	"--control-vector-scaled", "--path", "--api-key-file", "--ssl-key-file", "--ssl-cert-file", "--chat-template-file",
	"--grammar-file", "--json-schema-file", "-f", "--file", "-lcs", "--lookup-cache-static", "-lcd",
	"--lookup-cache-dynamic", "--media-path", "--download-dir", "--ssl-keyfile", "--ssl-certfile",
	"--allowed-local-media-path", "--lora-modules", "--tokenizer", "--response-role-file",
	"--served-model-path", "--model-path", "--tokenizer-path", "--log-config-file", NULL
};

/* Whether the comma-separated csv lists the n bytes at flag. */
static bool listed(const char *csv, const char *flag, size_t n)
{
	for (const char *p = csv; p && *p;) {
		size_t len = strcspn(p, ",");
		if (len == n && !strncmp(p, flag, n))
			return true;
		p += len + (p[len] == ',');
	}
	return false;
}

/* The first of the user's engine arguments that touches files and is not
 * allowed on this worker, or NULL. "--flag=value" counts as --flag. */
static const char *forbidden_arg(const struct cr_supervisor *s, json_t *args)
{
	size_t i;
	json_t *a;
	json_array_foreach(args, i, a) {
		const char *v = json_string_value(a);
		if (!v || v[0] != '-')
			continue;
		size_t n = strcspn(v, "=");
		for (size_t k = 0; file_args[k]; k++)
			if (strlen(file_args[k]) == n && !strncmp(v, file_args[k], n) && !listed(s->cfg.allow_args, v, n))
				return file_args[k];
	}
	return NULL;
}

/* The argv and environment for p's engine, or NULL with why saying why not (yet). */
static char **build_command(struct cr_supervisor *s, struct proc *p, char ***envp, char *why, size_t n)
{
	bool follower = !strcmp(p->role, "follower"), raynode = !strncmp(p->role, "ray", 3);
	const char *bad = follower || raynode ? NULL : forbidden_arg(s, json_object_get(p->desired, "engine_args"));
	if (bad) {
		snprintf(why, n, "engine argument %s reads or writes files on this worker, which a deploy may not choose; "
				 "remove it, or allow it on this worker with 'corral worker --allow-engine-args %s'",
			 bad, bad);
		return NULL;
	}
	if (raynode && s->cfg.no_ray) {
		snprintf(why, n, "this worker runs inside the server, which never starts Ray; deploy with --selector to "
				 "use other workers");
		return NULL;
	}
	struct launch l = { s, p, p->desired, json_object_get(p->desired, "placement"), my_member(s, p->desired), NULL,
			    NULL, NULL, NULL, "", why, n };
	const char *engine = follower ? "llama.cpp-rpc" : raynode ? "ray" : cr_json_get_str(l.pl, "engine", "llama.cpp");
	l.e = cr_engines_find(s->cfg.catalog, engine);
	l.exe = cr_engine_locate(l.e); /* the worker's reports say whether it runs (version command) */
	if (!l.exe) {
		snprintf(why, n, "engine '%s' is not installed on this worker (PATH, CORRAL_ENGINE_PATH)", engine);
		return NULL;
	}
	l.addr = cr_json_get_str(json_object_get(l.inst, "addresses"), s->self_id, s->engine_host);
	l.head = json_object_get(l.inst, "ray_head");
	if (json_is_null(l.head))
		l.head = NULL;
	if (l.head)
		snprintf(l.head_addr, sizeof(l.head_addr), "%s:%lld", cr_json_get_str(l.head, "host", ""),
			 cr_json_get_int(l.head, "port", 0));
	char **argv = raynode ? argv_ray_node(&l) : follower ? argv_rpc_follower(&l) : argv_engine(&l);
	if (argv)
		*envp = launch_env(&l);
	free(l.exe);
	return argv;
}

/* The key of what a process was started for: a change means restart. */
static char *desired_key(json_t *inst, const char *role)
{
	/* a leader restarts when its RPC followers move, a Ray node when its head does */
	json_t *k = json_pack("{s:O?,s:O?,s:O?,s:O?,s:O?,s:s}", "placement", json_object_get(inst, "placement"), "source",
			      json_object_get(inst, "source"), "args", json_object_get(inst, "engine_args"), "followers",
			      !strcmp(role, "leader") ? json_object_get(inst, "followers") : NULL, "head",
			      !strcmp(role, "ray-worker") || !strcmp(role, "leader") ? json_object_get(inst, "ray_head")
			      : !strcmp(role, "headless") ? json_object_get(inst, "master") : NULL,
			      "role", role);
	char *text = json_dumps(k, JSON_SORT_KEYS | JSON_COMPACT);
	json_decref(k);
	char hash[CR_HASH_HEX];
	cr_secret_hash(text, hash);
	free(text);
	return cr_xstrdup(hash);
}

static void rotate_log(const char *path)
{
	struct stat st;
	if (stat(path, &st) == 0 && (uint64_t)st.st_size > LOG_ROTATE_BYTES) {
		char *old = cr_xasprintf("%s.1", path);
		rename(path, old);
		free(old);
	}
}

static void start(struct cr_supervisor *s, struct proc *p)
{
	char why[512] = "";
	char **env = NULL;
	if (!p->port || !port_free(s->engine_host, p->port)) {
		int port = pick_port(s);
		pthread_mutex_lock(&s->mu);
		p->port = port;
		pthread_mutex_unlock(&s->mu);
	}
	if (!p->port) {
		set_state(s, p, "error", "no free port in the worker's --port-range");
		p->next_start = cr_mono_ms() + 5000;
		return;
	}
	char *key = desired_key(p->desired, p->role); /* what this start is for */
	set_str(&p->key, key);
	free(key);
	char **argv = build_command(s, p, &env, why, sizeof(why));
	if (!argv) {
		p->waiting = !strncmp(why, "waiting", 7);
		set_state(s, p, p->waiting ? "starting" : "error", why);
		p->next_start = cr_mono_ms() + 1000; /* or at the next snapshot */
		return;
	}
	char *log = cr_xasprintf("%s/%s.log", s->log_dir, p->id);
	cr_mkdir_p(s->log_dir, 0700, NULL);
	rotate_log(log);
	int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	char *cmd = join_argv(argv);
	pid_t pid = fd < 0 ? -1 : fork();
	if (pid == 0) {
		setsid(); /* own session and process group: outlives the worker, killed as a group */
		dup2(fd, 1);
		dup2(fd, 2);
		int nul = open("/dev/null", O_RDONLY);
		if (nul >= 0)
			dup2(nul, 0);
		execve(argv[0], argv, env);
		dprintf(2, "corral: exec '%s' failed: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	if (fd >= 0) {
		/* the log is readable through the API: an engine key in argv is masked */
		const char *secret = cr_json_get_str(p->desired, "engine_key", NULL);
		size_t na = 0;
		while (argv[na])
			na++;
		char **masked = cr_xcalloc(na + 1, sizeof(char *));
		for (size_t k = 0; k < na; k++)
			masked[k] = secret && !strcmp(argv[k], secret) ? "***" : argv[k];
		char *shown = shell_line(masked);
		free(masked);
		dprintf(fd, "---- corral: starting %s\n", shown);
		free(shown);
		close(fd);
	}
	if (pid < 0) {
		set_state(s, p, "error", "could not start the engine (fork or log file failed)");
		p->next_start = cr_mono_ms() + 5000;
	} else {
		set_pid(s, p, pid);
		p->child = true;
		p->waiting = false;
		p->started = cr_mono_ms();
		p->healthy_since = 0;
		p->next_probe = 0;
		/* the start time from /proc identifies this process for adoption */
		for (int tries = 0; tries < 50 && !(p->start_time = proc_start_time(pid)); tries++)
			usleep(1000);
		free(p->cmdline);
		p->cmdline = cmd;
		cmd = NULL;
		char msg[128];
		snprintf(msg, sizeof(msg), "engine started (pid %d, port %d)%s", (int)pid, p->port,
			 p->restarts ? ", after a restart" : "");
		set_state(s, p, "starting", msg);
		cr_info("instance %s: %s", p->id, msg);
		save_state(s);
	}
	free(cmd);
	free(log);
	cr_argv_free(argv);
	cr_argv_free(env);
}

static void signal_group(struct proc *p, int sig)
{
	if (p->pid > 0 && kill(-p->pid, sig) != 0)
		kill(p->pid, sig);
}

/* ---- exits and health ---- */

static void exited(struct cr_supervisor *s, struct proc *p)
{
	char *log = cr_xasprintf("%s/%s.log", s->log_dir, p->id);
	char *tail = tail_lines(log, TAIL_LINES);
	free(log);
	struct cr_diag_facts facts = { 0, p->exit_status > 128 ? p->exit_status - 128 : 0 };
	struct statvfs sv;
	if (statvfs("/dev/shm", &sv) == 0)
		facts.shm_bytes = (uint64_t)sv.f_blocks * sv.f_frsize;
	const struct cr_diagnosis *d = cr_diagnose(tail, &facts);
	char line[280], quoted[300] = ""; /* no known pattern: the engine's own last word on it */
	if (!d && tail && p->exit_status >= 0 && p->exit_status < 128 && /* it exited on its own */
	    cr_diagnose_last_error(tail, line, sizeof(line)))
		snprintf(quoted, sizeof(quoted), "\"%s\"", line);
	char how[64];
	if (p->exit_status < 0)
		snprintf(how, sizeof(how), "ended");
	else if (p->exit_status >= 128)
		snprintf(how, sizeof(how), "was killed by signal %d", p->exit_status - 128);
	else
		snprintf(how, sizeof(how), "exited with status %d", p->exit_status);
	int64_t now = cr_mono_ms();
	int restarts = p->healthy_since && now - p->healthy_since > HEALTHY_RESET_MS ? 0 : p->restarts;
	int64_t delay = (int64_t)s->cfg.backoff_s * 1000;
	for (int i = 0; i < restarts && delay < MAX_BACKOFF_MS; i++)
		delay *= 2;
	if (delay > MAX_BACKOFF_MS)
		delay = MAX_BACKOFF_MS;
	p->next_start = now + delay;
	/* it never became healthy, again and again: a crash loop, said so (the
	 * backoff keeps doubling to 5 minutes), as Kubernetes' CrashLoopBackOff */
	bool loop = !p->healthy_since && restarts + 1 >= 3;
	char msg[900];
	snprintf(msg, sizeof(msg), "%sengine %s%s%s; %s in %lld s (restart %d); see 'corral logs %s'",
		 loop ? "crash loop: " : "", how, d || *quoted ? ": " : "", d ? d->cause : quoted,
		 loop ? "next try" : "restarting", (long long)(delay / 1000), restarts + 1, p->id);
	pthread_mutex_lock(&s->mu);
	p->restarts = restarts + 1;
	p->pid = 0;
	set_str(&p->cause, d ? d->cause : NULL);
	set_str(&p->fix, d ? d->fix : NULL);
	free(p->log_tail);
	p->log_tail = tail;
	pthread_mutex_unlock(&s->mu);
	set_state(s, p, loop ? "crash_loop" : "error", msg);
	cr_warn("instance %s: %s", p->id, msg);
	save_state(s);
}

static bool tcp_open(const char *host, int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (inet_pton(AF_INET, !strcmp(host, "0.0.0.0") ? "127.0.0.1" : host, &a.sin_addr) != 1)
		inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

/* The engine's own metrics, every 5 s while it runs (docs/metrics.md). */
static void read_metrics(struct cr_supervisor *s, struct proc *p, const struct cr_engine *e, const char *host,
			 int64_t now)
{
	p->next_metrics = now + 5000;
	char *url = cr_xasprintf("http://%s:%d%s", host, p->port, e->metrics);
	struct cr_http_resp r;
	struct cr_engine_stats st;
	memset(&st, 0, sizeof(st));
	if (cr_http_call("GET", url, cr_json_get_str(p->desired, "engine_key", NULL), NULL, 1000, &r, NULL) == 0) {
		if (r.status == 200)
			cr_engine_stats_parse(r.body, r.len, &st);
		cr_http_resp_release(&r);
	}
	free(url);
	pthread_mutex_lock(&s->mu);
	snprintf(p->stats_model, sizeof(p->stats_model), "%s", cr_json_get_str(p->desired, "model", ""));
	p->stats = st;
	pthread_mutex_unlock(&s->mu);
}

static void probe(struct cr_supervisor *s, struct proc *p)
{
	int64_t now = cr_mono_ms();
	if (now < p->next_probe)
		return;
	bool starting = strcmp(p->state, "running") != 0;
	p->next_probe = now + (starting ? 20 : 2000);
	json_t *pl = json_object_get(p->desired, "placement");
	bool follower = !strcmp(p->role, "follower");
	const struct cr_engine *e = cr_engines_find(s->cfg.catalog, follower ? "llama.cpp-rpc" : !strncmp(p->role, "ray", 3) ? "ray" : cr_json_get_str(pl, "engine", "llama.cpp"));
	if (e && e->health && !strcmp(p->role, "headless"))
		e = NULL; /* a headless vLLM node serves no HTTP */
	const char *host = !strcmp(s->engine_host, "0.0.0.0") ? "127.0.0.1" : s->engine_host;
	bool ready = false;
	char msg[160] = "loading";
	if (e && e->health) {
		char *url = cr_xasprintf("http://%s:%d%s", host, p->port, e->health);
		struct cr_http_resp r;
		struct cr_err err = CR_ERR_INIT;
		if (cr_http_call("GET", url, NULL, NULL, 1000, &r, &err) == 0) {
			ready = r.status == 200;
			if (r.status == 503)
				snprintf(msg, sizeof(msg), "loading the model");
			cr_http_resp_release(&r);
		} else {
			snprintf(msg, sizeof(msg), "waiting for the engine to listen");
		}
		free(url);
	} else if (!strcmp(p->role, "ray-worker") || !strcmp(p->role, "headless")) {
		ready = now - p->started > 500; /* joined: it would have exited otherwise */
	} else {
		ready = tcp_open(host, p->port);
	}
	if (ready && !starting && e && e->metrics && now >= p->next_metrics)
		read_metrics(s, p, e, host, now);
	if (ready && starting) {
		p->healthy_since = now;
		char m[160];
		snprintf(m, sizeof(m), "serving on port %d (pid %d)", p->port, (int)p->pid);
		set_state(s, p, "running", m);
		cr_info("instance %s: running after %lld ms", p->id, (long long)(now - p->started));
	} else if (!ready && starting) {
		set_state(s, p, "starting", msg);
	}
}

/* ---- the loop ---- */

static void stop_proc(struct cr_supervisor *s, struct proc *p, int64_t now)
{
	if (!p->stop_deadline) {
		p->stop_deadline = now + (int64_t)s->cfg.stop_grace_s * 1000;
		signal_group(p, SIGTERM);
		set_state(s, p, "stopping", "SIGTERM sent");
	} else if (now > p->stop_deadline) {
		signal_group(p, SIGKILL);
	}
}

static void proc_free(struct proc *p)
{
	free(p->id);
	free(p->role);
	free(p->key);
	free(p->cmdline);
	free(p->message);
	free(p->cause);
	free(p->fix);
	free(p->log_tail);
	json_decref(p->desired);
	free(p);
}

static void reconcile(struct cr_supervisor *s)
{
	int64_t now = cr_mono_ms();
	pthread_mutex_lock(&s->mu);
	json_t *desired = json_deep_copy(s->desired);
	set_str(&s->self_id, s->worker_id);
	bool have = s->have_snapshot, kick = s->kick;
	s->kick = false;
	pthread_mutex_unlock(&s->mu);
	for (struct proc *p = s->procs; kick && p; p = p->next)
		if (p->waiting && !p->pid)
			p->next_start = 0;
	for (struct proc *p = s->procs; p; p = p->next)
		p->wanted = false;
	const char *id;
	json_t *inst;
	json_object_foreach(desired, id, inst) {
		json_t *pl = json_object_get(inst, "placement");
		bool lead = !strcmp(cr_json_get_str(pl, "leader", ""), s->self_id);
		bool ray = is_ray_group(inst);
		/* vLLM over Ray: a Ray node on every member, the engine on the leader only */
		const char *roles[2] = { NULL, NULL };
		if (ray) {
			roles[0] = lead ? "ray-head" : "ray-worker";
			roles[1] = lead ? "leader" : NULL;
		} else {
			roles[0] = lead ? "leader" : is_multinode(pl) ? "headless" : "follower";
		}
		for (int r = 0; r < 2 && roles[r]; r++) {
			const char *role = roles[r];
			char *pid_id = !strncmp(role, "ray", 3) ? cr_xasprintf("%s#ray", id) : cr_xstrdup(id);
			struct proc *p = s->procs;
			while (p && strcmp(p->id, pid_id) != 0)
				p = p->next;
			if (!p)
				p = proc_new(s, pid_id, role);
			char *key = desired_key(inst, role);
			if (p->pid && strcmp(p->key, key) != 0 && p->key[0] && !p->stop_deadline) {
				cr_info("instance %s: its placement changed; restarting the %s", pid_id, role);
				stop_proc(s, p, now);
			}
			p->wanted = true;
			if (strcmp(p->role, role) != 0) { /* the reporter reads it */
				pthread_mutex_lock(&s->mu);
				set_str(&p->role, role);
				pthread_mutex_unlock(&s->mu);
			}
			json_decref(p->desired);
			p->desired = json_incref(inst);
			free(key);
			free(pid_id);
		}
	}
	json_decref(desired);
	struct proc **pp = &s->procs;
	while (*pp) {
		struct proc *p = *pp;
		bool up = alive(s, p);
		if (!up && p->pid) {
			if (p->stop_deadline) { /* stopped on purpose */
				set_pid(s, p, 0);
				p->stop_deadline = 0;
				save_state(s);
			} else {
				exited(s, p);
			}
		}
		if (!p->wanted && have) {
			if (p->pid) {
				stop_proc(s, p, now);
			} else { /* gone: forget it (the reporter walks the list under the lock) */
				pthread_mutex_lock(&s->mu);
				*pp = p->next;
				s->changed = true;
				pthread_mutex_unlock(&s->mu);
				proc_free(p);
				save_state(s);
				continue;
			}
		} else if (p->wanted && !p->pid && !p->stop_deadline && now >= p->next_start) {
			start(s, p);
		} else if (p->wanted && p->pid && !p->stop_deadline) {
			probe(s, p);
		} else if (p->pid && p->stop_deadline) {
			stop_proc(s, p, now);
		}
		pp = &p->next;
	}
}

static void *loop(void *arg)
{
	struct cr_supervisor *s = arg;
	for (;;) {
		pthread_mutex_lock(&s->mu);
		bool stop = s->stopping;
		pthread_mutex_unlock(&s->mu);
		if (stop)
			break;
		reconcile(s);
		bool busy = false; /* engines starting: look again soon */
		for (struct proc *p = s->procs; p && !busy; p = p->next)
			busy = p->pid && strcmp(p->state, "running") != 0;
		pthread_mutex_lock(&s->mu);
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += (busy ? 20 : 200) * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		if (!s->stopping && !s->kick) /* a snapshot that came during reconcile is not lost */
			pthread_cond_timedwait(&s->wake, &s->mu, &until);
		pthread_mutex_unlock(&s->mu);
	}
	return NULL;
}

struct cr_supervisor *cr_supervisor_start(const struct cr_supervisor_config *cfg)
{
	struct cr_supervisor *s = cr_xcalloc(1, sizeof(*s));
	s->cfg = *cfg;
	s->data_dir = cr_xstrdup(cfg->data_dir);
	s->engine_host = cr_xstrdup(cfg->engine_host ? cfg->engine_host : "0.0.0.0");
	s->cfg.data_dir = s->data_dir;
	s->cfg.engine_host = s->engine_host;
	if (s->cfg.backoff_s <= 0)
		s->cfg.backoff_s = 10;
	if (s->cfg.stop_grace_s <= 0)
		s->cfg.stop_grace_s = 10;
	s->state_path = cr_xasprintf("%s/engines.json", s->data_dir);
	s->log_dir = cr_xasprintf("%s/logs", s->data_dir);
	s->desired = json_object();
	s->worker_id = cr_xstrdup("");
	s->self_id = cr_xstrdup("");
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->wake, NULL);
	load_state(s);
	pthread_create(&s->thread, NULL, loop, s);
	return s;
}

void cr_supervisor_free(struct cr_supervisor *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->mu);
	s->stopping = true;
	pthread_cond_broadcast(&s->wake);
	pthread_mutex_unlock(&s->mu);
	pthread_join(s->thread, NULL);
	save_state(s);
	while (s->procs) {
		struct proc *p = s->procs;
		s->procs = p->next;
		if (p->child && p->pid)
			waitpid(p->pid, NULL, WNOHANG);
		proc_free(p);
	}
	json_decref(s->desired);
	free(s->worker_id);
	free(s->self_id);
	free(s->state_path);
	free(s->log_dir);
	free(s->data_dir);
	free(s->engine_host);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->wake);
	free(s);
}

void cr_supervisor_set_desired(struct cr_supervisor *s, const char *worker_id, json_t *snapshot)
{
	json_t *by_id = json_object();
	size_t i;
	json_t *inst;
	json_array_foreach(json_object_get(snapshot, "instances"), i, inst) {
		const char *id = cr_json_get_str(inst, "id", NULL);
		if (id)
			json_object_set(by_id, id, inst);
	}
	pthread_mutex_lock(&s->mu);
	set_str(&s->worker_id, worker_id);
	json_decref(s->desired);
	s->desired = by_id;
	s->have_snapshot = true;
	s->kick = true;
	pthread_cond_broadcast(&s->wake);
	pthread_mutex_unlock(&s->mu);
}

/* VmRSS of pid in bytes, or -1. */
static long long rss_bytes(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "re");
	long long kb = -1;
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmRSS:", 6) && sscanf(line + 6, "%lld", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb < 0 ? -1 : kb * 1024;
}

json_t *cr_supervisor_report(struct cr_supervisor *s)
{
	json_t *arr = json_array();
	pthread_mutex_lock(&s->mu);
	for (struct proc *p = s->procs; p; p = p->next) {
		json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:i,s:i,s:s,s:i}", "id", p->id, "role", p->role, "state",
				      p->state[0] ? p->state : "starting", "message", p->message, "pid", (int)p->pid, "port",
				      p->port, "host", s->engine_host, "restarts", p->restarts);
		if (p->exit_status >= 0)
			json_object_set_new(o, "exit", json_integer(p->exit_status));
		long long rss = p->pid && !strcmp(p->state, "running") ? rss_bytes(p->pid) : -1;
		if (rss > 0) /* what the engine really holds in RAM, which placements learn from */
			json_object_set_new(o, "rss", json_integer(rss >> 20 << 20));
		if (p->aux_port)
			json_object_set_new(o, "master_port", json_integer(p->aux_port));
		if (p->cause && *p->cause)
			json_object_set_new(o, "cause", json_string(p->cause));
		if (p->fix && *p->fix)
			json_object_set_new(o, "fix", json_string(p->fix));
		if (p->log_tail && *p->log_tail)
			json_object_set_new(o, "log_tail", json_string(p->log_tail));
		json_array_append_new(arr, o);
	}
	pthread_mutex_unlock(&s->mu);
	return json_pack("{s:o}", "instances", arr);
}

void cr_supervisor_metrics(struct cr_supervisor *s, struct cr_buf *b)
{
	pthread_mutex_lock(&s->mu);
	size_t n = 0;
	for (struct proc *p = s->procs; p; p = p->next)
		n++;
	struct cr_engine_stats_row *rows = cr_xcalloc(n + 1, sizeof(*rows));
	n = 0;
	for (struct proc *p = s->procs; p; p = p->next)
		if (p->stats.has)
			rows[n++] = (struct cr_engine_stats_row){ p->stats_model, p->id, p->stats };
	cr_engine_stats_write(b, rows, n);
	pthread_mutex_unlock(&s->mu);
	free(rows);
}

bool cr_supervisor_take_changed(struct cr_supervisor *s)
{
	pthread_mutex_lock(&s->mu);
	bool c = s->changed;
	s->changed = false;
	pthread_mutex_unlock(&s->mu);
	return c;
}

char *cr_supervisor_log_path(struct cr_supervisor *s, const char *instance_id)
{
	if (strchr(instance_id, '/') || instance_id[0] == '.')
		return NULL;
	char *path = cr_xasprintf("%s/%s.log", s->log_dir, instance_id);
	if (access(path, R_OK) != 0) {
		free(path);
		return NULL;
	}
	return path;
}

void cr_supervisor_stop_all(struct cr_supervisor *s)
{
	for (struct proc *p = s->procs; p; p = p->next)
		signal_group(p, SIGTERM);
}
