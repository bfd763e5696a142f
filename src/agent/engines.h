/* Engines installed on this node, found on PATH and in $CORRAL_ENGINE_PATH
 * (a colon-separated list searched first): llama-server (llama.cpp),
 * ggml-rpc-server or rpc-server (llama.cpp RPC), vllm, sglang. */
#ifndef CR_AGENT_ENGINES_H
#define CR_AGENT_ENGINES_H

#include <jansson.h>

/* [{"name":"llama.cpp","path":"/usr/local/bin/llama-server"}, ...]: the first
 * executable found for each engine (new reference). */
json_t *cr_engines_detect(void);

#endif
