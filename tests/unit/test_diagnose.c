/* One test per failure pattern: a log tail as the engine prints it, and the
 * diagnosis a user reads; plus the engine catalog's templates. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "agent/diagnose.h"
#include "agent/engines.h"

static void expect(const char *log, uint64_t shm, const char *id)
{
	struct cr_diag_facts f = { shm, 0 };
	const struct cr_diagnosis *d = cr_diagnose(log, &f);
	cr_assert_not_null(d, "no diagnosis for: %s", log);
	cr_assert_str_eq(d->id, id, "for: %s", log);
	cr_assert(d->cause[0] && d->fix[0]);
}

Test(diagnose, cuda_out_of_memory)
{
	expect("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", 0, "cuda_oom");
	expect("ggml_backend_cuda_buffer_type_alloc_buffer: allocating 9000.00 MiB on device 0: cudaMalloc failed: out of memory",
	       0, "cuda_oom");
}

Test(diagnose, nccl_with_small_shm)
{
	const char *log = "RuntimeError: NCCL error in: ProcessGroupNCCL.cpp:1275, unhandled system error";
	expect(log, 64ull << 20, "nccl_shm");
	expect(log, 32ull << 30, "nccl_system");
}

Test(diagnose, ray_version_mismatch)
{
	expect("RuntimeError: Version mismatch: The cluster was started with:\n Ray: 2.9.0\n This process on node was started with: Ray: 2.10.0",
	       0, "ray_version");
}

Test(diagnose, ray_gcs_unreachable)
{
	expect("Failed to connect to GCS at address 10.0.0.1:6379 within 5 seconds.", 0, "ray_gcs");
}

Test(diagnose, rpc_peer_lost)
{
	expect("/src/ggml/src/ggml-rpc/ggml-rpc.cpp:579: Remote RPC server crashed or returned malformed response", 0,
	       "rpc_peer_lost");
}

Test(diagnose, model_file_missing_invalid_or_truncated)
{
	expect("E gguf_init_from_file: failed to open GGUF file '/m/x.gguf' (No such file or directory)", 0, "model_missing");
	expect("E gguf_init_from_reader: invalid magic characters: 'GGML', expected 'GGUF'", 0, "model_invalid");
	expect("E llama_model_load: error loading model: tensor 'blk.0.ffn_up.weight' data is not within the file bounds, model is corrupted or incomplete",
	       0, "model_truncated");
	expect("error loading model hyperparameters: key not found in model: llama.context_length", 0, "model_invalid");
}

Test(diagnose, unsupported_gpu_architecture)
{
	expect("CUDA error: no kernel image is available for execution on the device", 0, "gpu_arch");
	expect("GPU compute capability 6.1 is not supported (need >= 7.0)", 0, "gpu_arch");
}

Test(diagnose, port_in_use)
{
	expect("E srv start: couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 20000", 0, "port_in_use");
	expect("OSError: [Errno 98] Address already in use", 0, "port_in_use");
}

Test(diagnose, device_buffer_allocation_failed)
{
	expect("ggml_gallocr_reserve_n: failed to allocate CUDA0 buffer of size 2147483648", 0, "alloc_failed");
}

Test(diagnose, ray_version_mismatch_in_lower_case)
{
	expect("RuntimeError: version mismatch between ray on the head (2.9.0) and this node (2.10.0)", 0, "ray_version");
}

Test(diagnose, rpc_follower_unreachable)
{
	expect("E ggml_backend_rpc_get_device_count: failed to connect to RPC server at 10.0.0.2:50052", 0,
	       "rpc_unreachable");
}

Test(diagnose, model_that_does_not_load)
{
	expect("E llama_model_load_from_file_impl: failed to load model\nE main: exiting due to model loading error", 0,
	       "model_load");
}

Test(diagnose, an_instruction_the_cpu_lacks)
{
	struct cr_diag_facts f = { 0, SIGILL };
	const struct cr_diagnosis *d = cr_diagnose("I srv main: loading model", &f);
	cr_assert_not_null(d);
	cr_assert_str_eq(d->id, "sigill");
	cr_assert(strstr(d->cause, "CPU instructions this machine cannot run"));
	cr_assert(strstr(d->fix, "GGML_NATIVE=OFF"));
	f.signal = SIGKILL;
	cr_assert_null(cr_diagnose("I srv main: loading model", &f), "a kill is not a diagnosis");
}

Test(diagnose, the_last_error_line_is_quoted)
{
	char out[200];
	cr_assert(cr_diagnose_last_error("build: 80fb11a\nerror: invalid argument: --bogus-flag\n\nusage: ...\n", out,
					 sizeof(out)));
	cr_assert_str_eq(out, "error: invalid argument: --bogus-flag");
	cr_assert(cr_diagnose_last_error("E main: failed to load model\r\n", out, sizeof(out)));
	cr_assert_str_eq(out, "E main: failed to load model");
	cr_assert_not(cr_diagnose_last_error("all good\n", out, sizeof(out)));
}

Test(diagnose, unknown_logs_have_no_diagnosis)
{
	cr_assert_null(cr_diagnose("I srv main: server is listening", NULL));
	cr_assert_null(cr_diagnose(NULL, NULL));
}

Test(engines, templates_drop_optional_flags_and_refuse_unknown_placeholders)
{
	struct cr_engine_catalog cat;
	cr_assert_eq(cr_engines_load(NULL, &cat, NULL), 0);
	const struct cr_engine *e = cr_engines_find(&cat, "llama.cpp");
	cr_assert_not_null(e);
	json_t *vars = json_pack("{s:s,s:s,s:s,s:i,s:i,s:i,s:i,s:s,s:s,s:s}", "exe", "/bin/llama-server", "model", "/m.gguf",
				 "host", "127.0.0.1", "port", 20001, "ctx", 4096, "parallel", 2, "ngl", 33, "tensor_split",
				 "", "rpc", "10.0.0.2:20000", "name", "qwen");
	char **argv = cr_engine_expand(e->command, vars, NULL);
	cr_assert_not_null(argv);
	char joined[512] = "";
	for (size_t i = 0; argv[i]; i++)
		snprintf(joined + strlen(joined), sizeof(joined) - strlen(joined), "%s%s", i ? " " : "", argv[i]);
	cr_assert_str_eq(joined, "/bin/llama-server -m /m.gguf --host 127.0.0.1 --port 20001 -c 4096 -np 2 -ngl 33 "
				 "--rpc 10.0.0.2:20000 --alias qwen --metrics");
	cr_argv_free(argv);
	char *bad[] = { "{exe}", "--x", "{nope}", NULL };
	struct cr_err err = CR_ERR_INIT;
	cr_assert_null(cr_engine_expand(bad, vars, &err));
	cr_assert(strstr(err.message, "unknown placeholder '{nope}'"), "%s", err.message);
	json_decref(vars);
	cr_engines_release(&cat);
}

Test(engines, user_definitions_replace_and_add)
{
	char path[] = "/tmp/corral-engines-XXXXXX";
	int fd = mkstemp(path);
	const char *doc = "{\"engines\":[{\"name\":\"my-llm\",\"command\":[\"/opt/my/serve\",\"--port\",\"{port}\"],"
			  "\"env\":{\"A\":\"1\"},\"health\":\"/ready\",\"devices\":[\"nvidia\"]},"
			  "{\"name\":\"vllm\",\"command\":\"/opt/vllm/bin/vllm serve {model} --port {port}\"}]}";
	cr_assert_eq(write(fd, doc, strlen(doc)), (ssize_t)strlen(doc));
	close(fd);
	struct cr_engine_catalog cat;
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(cr_engines_load(path, &cat, &err), 0, "%s", err.message);
	const struct cr_engine *e = cr_engines_find(&cat, "my-llm");
	cr_assert_not_null(e);
	cr_assert_str_eq(e->exes[0], "/opt/my/serve");
	cr_assert_str_eq(e->command[0], "{exe}");
	cr_assert_str_eq(e->health, "/ready");
	cr_assert_str_eq(e->env[0], "A=1");
	cr_assert_str_eq(e->devices, "nvidia");
	cr_assert_str_eq(cr_engines_find(&cat, "vllm")->exes[0], "/opt/vllm/bin/vllm", "a user vllm replaces the built-in");
	cr_engines_release(&cat);
	const char *broken = "{\"engines\":[{\"name\":\"x\",\"command\":[1,2]}]}";
	fd = open(path, O_WRONLY | O_TRUNC);
	cr_assert_eq(write(fd, broken, strlen(broken)), (ssize_t)strlen(broken));
	close(fd);
	cr_assert_eq(cr_engines_load(path, &cat, &err), CR_EINPUT);
	cr_assert(strstr(err.message, "engine 'x': field 'command' must be a non-empty list of strings"), "%s", err.message);
	/* a command of only spaces used to crash the worker */
	const char *blanks[] = { "{\"engines\":[{\"name\":\"x\",\"command\":\"   \"}]}",
				 "{\"engines\":[{\"name\":\"x\",\"command\":[\"  \",\"--port\"]}]}",
				 "{\"engines\":[{\"name\":\"x\",\"command\":[\"\"]}]}",
				 "{\"engines\":[{\"name\":\"x\",\"command\":\"serve\",\"exe\":\"  \"}]}" };
	for (size_t i = 0; i < sizeof(blanks) / sizeof(blanks[0]); i++) {
		fd = open(path, O_WRONLY | O_TRUNC);
		cr_assert_eq(write(fd, blanks[i], strlen(blanks[i])), (ssize_t)strlen(blanks[i]));
		close(fd);
		cr_assert_eq(cr_engines_load(path, &cat, &err), CR_EINPUT, "%s", blanks[i]);
		cr_assert(strstr(err.message, "engine 'x': field '"), "%s", err.message);
		cr_assert(strstr(err.message, "blank"), "%s", err.message);
		cr_engines_release(&cat);
	}
	unlink(path);
}
