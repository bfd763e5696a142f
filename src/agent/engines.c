/* Engine catalog: built-in definitions, a JSON file of user definitions,
 * discovery with version commands run under a timeout, and command templates. */
#include "agent/engines.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/json.h"
#include "base/mem.h"
#include "base/util.h"

#define VERSION_TIMEOUT_MS 5000

static const struct {
	const char *name, *exes, *command, *version, *env, *health, *devices, *key_env, *key_arg, *metrics;
} builtins[] = {
	{ "llama.cpp", "llama-server",
	  "{exe} -m {model} --host {host} --port {port} -c {ctx} -np {parallel} -ngl {ngl} --tensor-split {tensor_split} "
	  "--rpc {rpc} --alias {name} --metrics",
	  "{exe} --version", "GGML_NO_BACKTRACE=1", "/health", "cpu,nvidia,amd", "LLAMA_API_KEY", NULL, "/metrics" },
	{ "llama.cpp-rpc", "ggml-rpc-server rpc-server", "{exe} -H {host} -p {port}", NULL, "GGML_NO_BACKTRACE=1", NULL,
	  "cpu,nvidia,amd", NULL, NULL, NULL },
	{ "vllm", "vllm",
	  "{exe} serve {model} --host {host} --port {port} --served-model-name {name} --max-model-len {ctx} "
	  "--max-num-seqs {parallel} --tensor-parallel-size {tp} --pipeline-parallel-size {pp} "
	  "--gpu-memory-utilization {gpu_util} --distributed-executor-backend {executor}",
	  "{exe} --version", "", "/health", "nvidia,amd", "VLLM_API_KEY", NULL, "/metrics" },
	{ "sglang", "sglang",
	  "{exe} serve --model-path {model} --host {host} --port {port} --served-model-name {name} --context-length {ctx} "
	  "--tp-size {tp} --pp-size {pp} --mem-fraction-static {gpu_util} --enable-metrics",
	  "{exe} version", "", "/health", "nvidia,amd", NULL, "--api-key", "/metrics" },
	{ "ray", "ray", "{exe} start --block", "{exe} --version", "", NULL, "cpu,nvidia,amd", NULL, NULL, NULL },
};

static char **split_words(const char *s)
{
	size_t n = 0;
	char **v = cr_xcalloc(strlen(s) / 2 + 2, sizeof(char *));
	char *copy = cr_xstrdup(s), *save = NULL;
	for (char *t = strtok_r(copy, " ", &save); t; t = strtok_r(NULL, " ", &save))
		v[n++] = cr_xstrdup(t);
	free(copy);
	return v;
}

void cr_argv_free(char **argv)
{
	for (size_t i = 0; argv && argv[i]; i++)
		free(argv[i]);
	free(argv);
}

static void engine_release(struct cr_engine *e)
{
	free(e->name);
	cr_argv_free(e->exes);
	cr_argv_free(e->command);
	cr_argv_free(e->version);
	cr_argv_free(e->env);
	free(e->health);
	free(e->metrics);
	free(e->key_env);
	free(e->key_arg);
	free(e->devices);
	memset(e, 0, sizeof(*e));
}

void cr_engines_release(struct cr_engine_catalog *cat)
{
	for (size_t i = 0; i < cat->n; i++)
		engine_release(&cat->engines[i]);
	free(cat->engines);
	cat->engines = NULL;
	cat->n = 0;
}

const struct cr_engine *cr_engines_find(const struct cr_engine_catalog *cat, const char *name)
{
	for (size_t i = 0; i < cat->n; i++)
		if (!strcmp(cat->engines[i].name, name))
			return &cat->engines[i];
	return NULL;
}

static struct cr_engine *slot(struct cr_engine_catalog *cat, const char *name)
{
	struct cr_engine *e = (struct cr_engine *)cr_engines_find(cat, name);
	if (e) {
		engine_release(e);
	} else {
		cat->engines = cr_xrealloc(cat->engines, (cat->n + 1) * sizeof(*cat->engines));
		e = &cat->engines[cat->n++];
		memset(e, 0, sizeof(*e));
	}
	e->name = cr_xstrdup(name);
	return e;
}

/* A list of strings, or one string split on spaces. */
static int strings(json_t *v, const char *file, const char *name, const char *field, bool required, char ***out,
		   struct cr_err *err)
{
	*out = NULL;
	if (!v && !required)
		return 0;
	if (json_is_string(v) && *json_string_value(v)) {
		*out = split_words(json_string_value(v));
		if ((*out)[0]) /* not only spaces */
			return 0;
		cr_argv_free(*out);
		*out = NULL;
		goto bad;
	}
	if (json_is_array(v) && json_array_size(v)) {
		char **a = cr_xcalloc(json_array_size(v) + 1, sizeof(char *));
		size_t i;
		json_t *x;
		json_array_foreach(v, i, x) {
			if (!json_is_string(x)) {
				cr_argv_free(a);
				goto bad;
			}
			a[i] = cr_xstrdup(json_string_value(x));
		}
		if (!a[0][strspn(a[0], " \t")]) { /* the program itself is blank */
			cr_argv_free(a);
			goto bad;
		}
		*out = a;
		return 0;
	}
bad:
	return cr_err_set(err, CR_EINPUT, "give a list of strings (or one string of words), see docs/engines.md",
			  "%s: engine '%s': field '%s' must be a non-empty list of strings whose first is not blank", file,
			  name, field);
}

static int load_user(const char *path, struct cr_engine_catalog *cat, struct cr_err *err)
{
	char *text = NULL;
	size_t len;
	int rc = cr_file_read(path, 1 << 20, &text, &len, err);
	if (rc)
		return rc;
	json_error_t je;
	json_t *doc = json_loadb(text, len, 0, &je), *list = json_object_get(doc, "engines");
	free(text);
	if (!json_is_array(list)) {
		json_decref(doc);
		return cr_err_set(err, CR_EINPUT, "write {\"engines\": [{\"name\": ..., \"command\": [...]}]}",
				  "%s: %s", path, doc ? "no 'engines' list" : je.text);
	}
	size_t i;
	json_t *d;
	json_array_foreach(list, i, d) {
		const char *name = cr_json_get_str(d, "name", NULL);
		if (!name || !*name) {
			rc = cr_err_set(err, CR_EINPUT, "give every engine a name", "%s: engine #%zu has no 'name'", path, i);
			break;
		}
		struct cr_engine *e = slot(cat, name);
		char **env = NULL;
		json_t *envo = json_object_get(d, "env");
		if ((rc = strings(json_object_get(d, "command"), path, name, "command", true, &e->command, err)) ||
		    (rc = strings(json_object_get(d, "version"), path, name, "version", false, &e->version, err)))
			break;
		env = cr_xcalloc(json_object_size(envo) + 1, sizeof(char *));
		const char *k;
		json_t *v;
		size_t n = 0;
		json_object_foreach(envo, k, v)
			env[n++] = cr_xasprintf("%s=%s", k, json_string_value(v) ? json_string_value(v) : "");
		e->env = env;
		/* the executable is the command's first word unless "exe" says otherwise */
		const char *exe = cr_json_get_str(d, "exe", NULL);
		e->exes = split_words(exe ? exe : e->command[0]);
		if (!e->exes[0]) {
			rc = cr_err_set(err, CR_EINPUT, "name the engine's program, e.g. \"exe\": \"/opt/x/bin/serve\"",
					"%s: engine '%s': field 'exe' is blank", path, name);
			break;
		}
		if (!exe) {
			free(e->command[0]);
			e->command[0] = cr_xstrdup("{exe}");
		}
		const char *health = cr_json_get_str(d, "health", NULL);
		e->health = health && *health ? cr_xstrdup(health) : NULL;
		const char *metrics = cr_json_get_str(d, "metrics", NULL);
		free(e->metrics);
		e->metrics = metrics && *metrics ? cr_xstrdup(metrics) : NULL;
		/* how it takes the instance's API key: a variable, or a flag */
		const char *kv = cr_json_get_str(d, "api_key_env", NULL), *ka = cr_json_get_str(d, "api_key_arg", NULL);
		free(e->key_env);
		free(e->key_arg);
		e->key_env = kv && *kv ? cr_xstrdup(kv) : NULL;
		e->key_arg = ka && *ka ? cr_xstrdup(ka) : NULL;
		json_t *devs = json_object_get(d, "devices"), *all = json_string("cpu nvidia amd");
		char **dv = NULL;
		rc = strings(devs ? devs : all, path, name, "devices", true, &dv, err);
		json_decref(all);
		if (rc)
			break;
		char *joined = cr_xstrdup("");
		for (size_t j = 0; dv[j]; j++) {
			char *next = cr_xasprintf("%s%s%s", joined, j ? "," : "", dv[j]);
			free(joined);
			joined = next;
		}
		cr_argv_free(dv);
		e->devices = joined;
	}
	json_decref(doc);
	return rc;
}

int cr_engines_load(const char *config_path, struct cr_engine_catalog *cat, struct cr_err *err)
{
	memset(cat, 0, sizeof(*cat));
	for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
		struct cr_engine *e = slot(cat, builtins[i].name);
		e->exes = split_words(builtins[i].exes);
		e->command = split_words(builtins[i].command);
		e->version = builtins[i].version ? split_words(builtins[i].version) : NULL;
		e->env = split_words(builtins[i].env);
		e->health = builtins[i].health ? cr_xstrdup(builtins[i].health) : NULL;
		e->metrics = builtins[i].metrics ? cr_xstrdup(builtins[i].metrics) : NULL;
		e->key_env = builtins[i].key_env ? cr_xstrdup(builtins[i].key_env) : NULL;
		e->key_arg = builtins[i].key_arg ? cr_xstrdup(builtins[i].key_arg) : NULL;
		e->devices = cr_xstrdup(builtins[i].devices);
		e->builtin = true;
	}
	int rc = config_path ? load_user(config_path, cat, err) : 0;
	if (rc)
		cr_engines_release(cat);
	return rc;
}

/* ---- discovery ---- */

static char *find_in(const char *dirs, const char *exe)
{
	if (strchr(exe, '/')) { /* a path, as a shell takes it; kept absolute for the engine's start */
		char *abs = realpath(exe, NULL);
		if (abs && access(abs, X_OK) == 0)
			return abs;
		free(abs);
		return NULL;
	}
	if (!dirs || !*dirs)
		return NULL;
	char *copy = cr_xstrdup(dirs), *save = NULL, *found = NULL;
	for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
		char *p = cr_xasprintf("%s/%s", d, exe);
		if (access(p, X_OK) == 0)
			found = p;
		else
			free(p);
	}
	free(copy);
	return found;
}

int cr_run_output(char **argv, int timeout_ms, char **out)
{
	int fds[2];
	*out = NULL;
	if (pipe2(fds, O_CLOEXEC) != 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		return -errno;
	}
	if (pid == 0) {
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		int devnull = open("/dev/null", O_RDONLY);
		if (devnull >= 0)
			dup2(devnull, 0);
		setpgid(0, 0);
		execv(argv[0], argv);
		_exit(127);
	}
	close(fds[1]);
	size_t len = 0, cap = 65536;
	char *buf = cr_xmalloc(cap + 1);
	int64_t deadline = cr_mono_ms() + timeout_ms;
	bool timed_out = false;
	for (;;) {
		int64_t left = deadline - cr_mono_ms();
		struct pollfd p = { fds[0], POLLIN, 0 };
		if (left <= 0 || poll(&p, 1, (int)left) == 0) {
			timed_out = true;
			break;
		}
		char chunk[4096];
		ssize_t r = read(fds[0], chunk, sizeof(chunk));
		if (r <= 0)
			break;
		size_t take = (size_t)r < cap - len ? (size_t)r : cap - len;
		memcpy(buf + len, chunk, take);
		len += take;
	}
	close(fds[0]);
	buf[len] = '\0';
	*out = buf;
	if (timed_out)
		kill(-pid, SIGKILL);
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (timed_out)
		return -ETIMEDOUT;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Run argv with a timeout; its first output line in out. */
static int run_capture(char **argv, char *out, size_t n)
{
	char *all = NULL;
	int rc = cr_run_output(argv, VERSION_TIMEOUT_MS, &all);
	snprintf(out, n, "%s", all ? all : "");
	out[strcspn(out, "\r\n")] = '\0';
	free(all);
	return rc;
}

/* The version in a version command's first line: "version: 0.4.0 (...)" ->
 * "0.4.0 (...)", else the line itself. */
static const char *version_of(const char *line)
{
	const char *v = strstr(line, "version:");
	if (v) {
		v += 8;
		while (*v == ' ')
			v++;
		return v;
	}
	return line;
}

char *cr_engine_locate(const struct cr_engine *e)
{
	const char *extra = getenv("CORRAL_ENGINE_PATH"), *path = getenv("PATH");
	char *exe = NULL;
	for (size_t k = 0; e && e->exes[k] && !exe; k++) {
		exe = find_in(extra, e->exes[k]);
		if (!exe)
			exe = find_in(path, e->exes[k]);
	}
	return exe;
}

json_t *cr_engines_discover(const struct cr_engine_catalog *cat, json_t *notes)
{
	json_t *out = json_array();
	for (size_t i = 0; i < cat->n; i++) {
		const struct cr_engine *e = &cat->engines[i];
		char *exe = cr_engine_locate(e);
		if (!exe) {
			if (!e->builtin)
				json_array_append_new(notes, json_sprintf("engine '%s': '%s' not found on PATH or CORRAL_ENGINE_PATH",
									  e->name, e->exes[0]));
			continue;
		}
		char line[256] = "unknown";
		if (e->version) {
			json_t *vars = json_pack("{s:s}", "exe", exe);
			char **argv = cr_engine_expand(e->version, vars, NULL);
			json_decref(vars);
			int rc = argv ? run_capture(argv, line, sizeof(line)) : -EINVAL;
			cr_argv_free(argv);
			if (rc != 0) {
				json_array_append_new(notes, json_sprintf("engine '%s' at %s is not offered: its version command %s%s%s",
									  e->name, exe,
									  rc == -ETIMEDOUT ? "did not finish in 5 s" : "failed",
									  line[0] ? ": " : "", line));
				free(exe);
				continue;
			}
		}
		json_t *devs = json_array();
		char **dv = split_words(e->devices);
		for (size_t k = 0; dv[k]; k++) {
			char *save = NULL;
			for (char *t = strtok_r(dv[k], ",", &save); t; t = strtok_r(NULL, ",", &save))
				json_array_append_new(devs, json_string(t));
		}
		cr_argv_free(dv);
		json_array_append_new(out, json_pack("{s:s,s:s,s:s,s:o}", "name", e->name, "version", version_of(line), "path",
						     exe, "devices", devs));
		free(exe);
	}
	/* rpc-server has no version command: it is the build of the llama-server beside it */
	json_t *llama = NULL, *rpc = NULL;
	size_t i;
	json_t *x;
	json_array_foreach(out, i, x) {
		if (!strcmp(cr_json_get_str(x, "name", ""), "llama.cpp"))
			llama = x;
		if (!strcmp(cr_json_get_str(x, "name", ""), "llama.cpp-rpc"))
			rpc = x;
	}
	if (llama && rpc)
		json_object_set(rpc, "version", json_object_get(llama, "version"));
	return out;
}

/* ---- templates ---- */

static char *var_text(json_t *v)
{
	if (json_is_string(v))
		return cr_xstrdup(json_string_value(v));
	if (json_is_integer(v))
		return cr_xasprintf("%lld", (long long)json_integer_value(v));
	if (json_is_real(v))
		return cr_xasprintf("%.2f", json_real_value(v));
	return NULL;
}

char **cr_engine_expand(char *const *tmpl, json_t *vars, struct cr_err *err)
{
	size_t n = 0;
	while (tmpl[n])
		n++;
	char **out = cr_xcalloc(n + 1, sizeof(char *));
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		const char *t = tmpl[i];
		char *res = cr_xstrdup("");
		while (*t) {
			const char *open = strchr(t, '{'), *close = open ? strchr(open, '}') : NULL;
			if (!open || !close) {
				char *next = cr_xasprintf("%s%s", res, t);
				free(res);
				res = next;
				break;
			}
			char key[64];
			snprintf(key, sizeof(key), "%.*s", (int)(close - open - 1), open + 1);
			json_t *v = json_object_get(vars, key);
			char *val = v ? var_text(v) : NULL;
			if (!v) {
				free(res);
				cr_argv_free(out);
				cr_err_set(err, CR_EINPUT, "use the placeholders listed in docs/engines.md",
					   "engine command: unknown placeholder '{%s}'", key);
				return NULL;
			}
			char *next = cr_xasprintf("%s%.*s%s", res, (int)(open - t), t, val ? val : "");
			free(val);
			free(res);
			res = next;
			t = close + 1;
		}
		if (!*res && m > 0 && out[m - 1][0] == '-') { /* an optional flag without its value */
			free(out[--m]);
			out[m] = NULL;
			free(res);
			continue;
		}
		out[m++] = res;
	}
	return out;
}
