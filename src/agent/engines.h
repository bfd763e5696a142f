/* The engine catalog: how to find, version and launch each inference engine.
 * Built-in definitions for llama.cpp (llama-server), llama.cpp RPC
 * (ggml-rpc-server or rpc-server), vLLM, SGLang and Ray, plus user
 * definitions from a JSON file (docs/engines.md). Workers discover the
 * installed ones (PATH, $CORRAL_ENGINE_PATH, or an absolute path), run each
 * version command with a timeout, and report {name, version, path, devices};
 * an engine that is missing or whose version command fails is not offered,
 * and a note says why. */
#ifndef CR_AGENT_ENGINES_H
#define CR_AGENT_ENGINES_H

#include <jansson.h>
#include <stdbool.h>

#include "base/err.h"

struct cr_engine {
	char *name;
	char **exes;     /* executable names (searched) or absolute paths; NULL-terminated */
	char **command;  /* argv template, "{exe}" first; NULL-terminated */
	char **version;  /* argv template of the version command, or NULL */
	char **env;      /* "K=V" added to the engine's environment; NULL-terminated */
	char *health;    /* HTTP path answering 200 when ready; NULL: TCP connect only */
	char *metrics;   /* HTTP path of its Prometheus metrics, or NULL */
	char *key_env;   /* the variable the engine reads its API key from (LLAMA_API_KEY), or NULL */
	char *key_arg;   /* else the flag that takes it (--api-key), or NULL */
	char *devices;   /* comma-separated: cpu, nvidia, amd */
	bool builtin;
};

struct cr_engine_catalog {
	struct cr_engine *engines;
	size_t n;
};

/* Built-ins, then the definitions in config_path (NULL: none); a user
 * definition with a built-in's name replaces it. CR_EINPUT names the file,
 * the entry and the field that is wrong. Release with cr_engines_release. */
int cr_engines_load(const char *config_path, struct cr_engine_catalog *cat, struct cr_err *err);
void cr_engines_release(struct cr_engine_catalog *cat);

/* The definition called name, or NULL. */
const struct cr_engine *cr_engines_find(const struct cr_engine_catalog *cat, const char *name);

/* The path of e's executable ($CORRAL_ENGINE_PATH, then PATH, or its
 * absolute path), or NULL; caller frees. Runs nothing. */
char *cr_engine_locate(const struct cr_engine *e);

/* Installed engines: [{"name","version","path","devices":[...]}] (new
 * reference); why others are not offered is appended to notes (an array). */
json_t *cr_engines_discover(const struct cr_engine_catalog *cat, json_t *notes);

/* Expand a template: "{key}" is replaced by vars[key] (strings or
 * integers); a flag followed by an argument that expands to "" is dropped
 * with it, so optional flags vanish. Returns a new NULL-terminated argv
 * (free with cr_argv_free), or NULL with err naming an unknown placeholder. */
char **cr_engine_expand(char *const *tmpl, json_t *vars, struct cr_err *err);
void cr_argv_free(char **argv);

/* Run argv (argv[0] a path) with stdin from /dev/null, collecting stdout and
 * stderr (64 KiB at most) into *out (caller frees). Returns the exit status
 * (128+N for a signal), or -ETIMEDOUT after timeout_ms (its process group is
 * killed), or a negated errno when it could not start. */
int cr_run_output(char **argv, int timeout_ms, char **out);

#endif
