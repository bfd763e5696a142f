/* Node and group compatibility checks over worker reports. See checks.h. */
#include "checks/checks.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/engine_kind.h"
#include "base/json.h"
#include "base/mem.h"

#define GIB (1024.0 * 1024 * 1024)
#define MIB (1024.0 * 1024)
#define SHM_NEED (1ull << 30) /* what vLLM/SGLang with NCCL want at least */

/* What an engine needs of an NVIDIA node: CUDA driver (major*1000 + minor*10,
 * NVML's encoding) and compute capability (major*10 + minor). */
static const struct {
	const char *engine;
	int cuda, cc;
} needs[] = {
	{ "vllm", 12010, 70 },
	{ "sglang", 12010, 75 },
	{ "llama.cpp", 0, 50 }, /* CUDA builds run from Maxwell on; the driver must match the build */
};

const char *cr_check_level_name(enum cr_check_level l)
{
	return l == CR_CHECK_FAIL ? "fail" : l == CR_CHECK_WARN ? "warn" : "pass";
}

enum cr_check_level cr_check_add(json_t *list, const char *id, enum cr_check_level level, const char *fix,
				 const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_array_append_new(list, json_pack("{s:s,s:s,s:s,s:s}", "id", id, "level", cr_check_level_name(level),
					      "message", msg, "fix", level == CR_CHECK_PASS || !fix ? "" : fix));
	return level;
}

static enum cr_check_level level_of(const json_t *c)
{
	const char *l = cr_json_get_str(c, "level", "pass");
	return !strcmp(l, "fail") ? CR_CHECK_FAIL : !strcmp(l, "warn") ? CR_CHECK_WARN : CR_CHECK_PASS;
}

enum cr_check_level cr_checks_worst(const json_t *list, int *warns, int *fails)
{
	enum cr_check_level worst = CR_CHECK_PASS;
	int w = 0, f = 0;
	size_t i;
	json_t *c;
	json_array_foreach(list, i, c) {
		enum cr_check_level l = level_of(c);
		w += l == CR_CHECK_WARN;
		f += l == CR_CHECK_FAIL;
		if (l > worst)
			worst = l;
	}
	if (warns)
		*warns = w;
	if (fails)
		*fails = f;
	return worst;
}

void cr_checks_summary(const json_t *list, enum cr_check_level min, char *out, size_t n)
{
	size_t len = 0;
	size_t i;
	json_t *c;
	out[0] = 0;
	json_array_foreach(list, i, c) {
		if (level_of(c) < min || len >= n)
			continue;
		const char *fix = cr_json_get_str(c, "fix", "");
		len += (size_t)snprintf(out + len, n - len, "%s%s %s: %s%s%s", len ? "; " : "",
					cr_check_level_name(level_of(c)), cr_json_get_str(c, "id", "?"),
					cr_json_get_str(c, "message", ""), *fix ? " Fix: " : "", fix);
	}
}

/* "12.4" -> 12040; "8.9" -> 89 (with scale 10); 0 when unparsable. */
static int version2(const char *v, int major_scale, int minor_scale)
{
	int a, b = 0;
	if (!v || sscanf(v, "%d.%d", &a, &b) < 1)
		return 0;
	return a * major_scale + b * minor_scale;
}

static const json_t *engine_of(const json_t *report, const char *name)
{
	size_t i;
	json_t *e;
	json_array_foreach(json_object_get(report, "engines"), i, e)
		if (!strcmp(cr_json_get_str(e, "name", ""), name))
			return e;
	return NULL;
}

static int gpu_count(const json_t *report, const char *vendor)
{
	int n = 0;
	size_t i;
	json_t *g;
	json_array_foreach(json_object_get(report, "gpus"), i, g)
		n += !vendor || !strcmp(cr_json_get_str(g, "vendor", ""), vendor);
	return n;
}

/* ---- node checks ---- */

static void check_nvml(const json_t *r, json_t *out)
{
	const json_t *nv = json_object_get(json_object_get(r, "drivers"), "nvidia");
	if (nv) {
		cr_check_add(out, "nvml", CR_CHECK_PASS, NULL, "NVIDIA driver %s loaded, NVML usable, %d GPU(s)",
			     cr_json_get_str(nv, "driver_version", "?"), gpu_count(r, "nvidia"));
		return;
	}
	const char *why = "NVML not found";
	size_t i;
	json_t *n;
	json_array_foreach(json_object_get(r, "notes"), i, n)
		if (json_string_value(n) && strstr(json_string_value(n), "NVIDIA"))
			why = json_string_value(n);
	if (json_is_true(json_object_get(r, "nvidia_device_files")))
		cr_check_add(out, "nvml", CR_CHECK_FAIL,
			     "install the user-space NVIDIA driver (libnvidia-ml.so.1) that matches the kernel module, or "
			     "pass the GPUs into the container (--gpus all); then restart the worker",
			     "NVIDIA device files exist but the driver cannot be used: %s", why);
	else
		cr_check_add(out, "nvml", CR_CHECK_PASS, NULL, "no NVIDIA GPUs on this node (%s)", why);
}

static void check_cuda_and_cc(const json_t *r, json_t *out)
{
	const json_t *nv = json_object_get(json_object_get(r, "drivers"), "nvidia");
	if (!nv || !gpu_count(r, "nvidia"))
		return;
	int cuda = version2(cr_json_get_str(nv, "cuda_driver_version", NULL), 1000, 10);
	for (size_t k = 0; k < sizeof(needs) / sizeof(needs[0]); k++) {
		const json_t *e = engine_of(r, needs[k].engine);
		if (!e)
			continue;
		if (needs[k].cuda) {
			if (!cuda)
				cr_check_add(out, "cuda-driver", CR_CHECK_WARN, "update the NVIDIA driver",
					     "%s needs CUDA driver %d.%d or newer; this driver does not say its CUDA version",
					     needs[k].engine, needs[k].cuda / 1000, needs[k].cuda % 1000 / 10);
			else if (cuda < needs[k].cuda)
				cr_check_add(out, "cuda-driver", CR_CHECK_FAIL,
					     "install an NVIDIA driver that supports the needed CUDA version (R530 or newer for "
					     "CUDA 12.1), or do not offer the engine on this node",
					     "%s needs CUDA driver %d.%d or newer; driver %s supports CUDA %d.%d",
					     needs[k].engine, needs[k].cuda / 1000, needs[k].cuda % 1000 / 10,
					     cr_json_get_str(nv, "driver_version", "?"), cuda / 1000, cuda % 1000 / 10);
			else
				cr_check_add(out, "cuda-driver", CR_CHECK_PASS, NULL, "%s: CUDA driver %d.%d (needs %d.%d)",
					     needs[k].engine, cuda / 1000, cuda % 1000 / 10, needs[k].cuda / 1000,
					     needs[k].cuda % 1000 / 10);
		}
		char low[300] = "";
		size_t len = 0, i;
		json_t *g;
		json_array_foreach(json_object_get(r, "gpus"), i, g) {
			int cc = version2(cr_json_get_str(g, "compute_capability", NULL), 10, 1);
			if (strcmp(cr_json_get_str(g, "vendor", ""), "nvidia") != 0 || !cc || cc >= needs[k].cc)
				continue;
			if (len < sizeof(low))
				len += (size_t)snprintf(low + len, sizeof(low) - len, "%sGPU %lld (%s, %d.%d)", len ? ", " : "",
							cr_json_get_int(g, "index", (long long)i), cr_json_get_str(g, "name", "?"),
							cc / 10, cc % 10);
		}
		if (*low)
			cr_check_add(out, "compute-capability", CR_CHECK_FAIL,
				     "use another engine on these GPUs (llama.cpp runs on older ones), or exclude them with "
				     "--selector",
				     "%s needs compute capability %d.%d or higher: %s", needs[k].engine, needs[k].cc / 10,
				     needs[k].cc % 10, low);
		else
			cr_check_add(out, "compute-capability", CR_CHECK_PASS, NULL,
				     "%s: every NVIDIA GPU has compute capability %d.%d or higher", needs[k].engine,
				     needs[k].cc / 10, needs[k].cc % 10);
	}
}

static void check_shm(const json_t *r, json_t *out)
{
	if (!engine_of(r, "vllm") && !engine_of(r, "sglang"))
		return;
	int gpus = gpu_count(r, NULL);
	uint64_t shm = (uint64_t)cr_json_get_int(json_object_get(r, "system"), "shm_bytes", 0);
	if (!gpus)
		return;
	if (shm < SHM_NEED)
		cr_check_add(out, "shm", CR_CHECK_WARN,
			     "give /dev/shm 1 GiB or more: docker run --shm-size=16g, or mount -o remount,size=16G /dev/shm",
			     "/dev/shm is %.0f MiB: vLLM and SGLang (NCCL) need 1 GiB or more with %d GPU(s); with less, "
			     "NCCL fails with 'unhandled system error'",
			     (double)shm / MIB, gpus);
	else
		cr_check_add(out, "shm", CR_CHECK_PASS, NULL, "/dev/shm is %.1f GiB", (double)shm / GIB);
}

/* Whether port p is in the kernel's reserved list "a-b,c,...". */
static bool reserved(const char *list, long p)
{
	for (const char *s = list; s && *s;) {
		char *end;
		long a = strtol(s, &end, 10), b = a;
		if (end == s)
			break;
		if (*end == '-')
			b = strtol(end + 1, &end, 10);
		if (p >= a && p <= b)
			return true;
		s = *end == ',' ? end + 1 : end;
		while (*s == ' ' || *s == '\n')
			s++;
	}
	return false;
}

static void check_ports(const json_t *r, json_t *out)
{
	const json_t *pr = json_object_get(r, "port_range");
	const json_t *eph = json_object_get(json_object_get(r, "system"), "ephemeral_ports");
	if (json_array_size(pr) != 2 || json_array_size(eph) != 2)
		return;
	long lo = (long)json_integer_value(json_array_get(pr, 0)), hi = (long)json_integer_value(json_array_get(pr, 1));
	long elo = (long)json_integer_value(json_array_get(eph, 0)), ehi = (long)json_integer_value(json_array_get(eph, 1));
	const char *res = cr_json_get_str(r, "reserved_ports", "");
	long exposed = 0;
	for (long p = lo > elo ? lo : elo; p <= (hi < ehi ? hi : ehi); p++)
		exposed += !reserved(res, p);
	if (exposed)
		cr_check_add(out, "port-range", CR_CHECK_WARN,
			     "choose --port-range outside the ephemeral range, or reserve it: sysctl "
			     "net.ipv4.ip_local_reserved_ports=LO-HI",
			     "engine ports %ld-%ld overlap the kernel's ephemeral range %ld-%ld (%ld port(s) not reserved): "
			     "outgoing connections may take them and engines then fail to bind",
			     lo, hi, elo, ehi, exposed);
	else
		cr_check_add(out, "port-range", CR_CHECK_PASS, NULL,
			     "engine ports %ld-%ld are outside the kernel's ephemeral range %ld-%ld (or reserved)", lo, hi,
			     elo, ehi);
}

static void check_disk(const json_t *r, uint64_t largest, json_t *out)
{
	const json_t *d = json_object_get(json_object_get(r, "system"), "disk");
	if (!d)
		return;
	uint64_t free = (uint64_t)cr_json_get_int(d, "free", 0);
	const char *path = cr_json_get_str(d, "path", "?");
	if (largest && free < largest)
		cr_check_add(out, "disk", CR_CHECK_FAIL, "free disk space in the model cache, or give the worker another --data-dir",
			     "%.1f GiB free in %s, but the largest model assigned here needs %.1f GiB", (double)free / GIB,
			     path, (double)largest / GIB);
	else
		cr_check_add(out, "disk", CR_CHECK_PASS, NULL, "%.1f GiB free in %s%s", (double)free / GIB, path,
			     largest ? " (enough for the models assigned)" : "");
}

static void check_clock(const json_t *r, json_t *out)
{
	const json_t *o = json_object_get(r, "clock_offset_ms");
	if (!json_is_integer(o))
		return;
	long long off = json_integer_value(o);
	if (off < -86400000000LL || off > 86400000000LL) /* a thousand days off: a broken report, and no overflow below */
		off = off < 0 ? -86400000000LL : 86400000000LL;
	long long mag = off < 0 ? -off : off;
	enum cr_check_level l = mag >= 60000 ? CR_CHECK_FAIL : mag >= 2000 ? CR_CHECK_WARN : CR_CHECK_PASS;
	cr_check_add(out, "clock", l, "run a time service on this node (chronyd or systemd-timesyncd)",
		     "clock is %+lld ms from the server's%s", off,
		     l == CR_CHECK_FAIL ? ": API key expiry, logs and usage days go wrong" : "");
}

static void check_engines(const json_t *r, json_t *out)
{
	size_t i;
	json_t *e;
	json_array_foreach(json_object_get(r, "engines"), i, e) {
		char id[80];
		snprintf(id, sizeof(id), "engine:%s", cr_json_get_str(e, "name", "?"));
		cr_check_add(out, id, CR_CHECK_PASS, NULL, "%s runs: version %s (%s)", cr_json_get_str(e, "name", "?"),
			     cr_json_get_str(e, "version", "?"), cr_json_get_str(e, "path", "?"));
	}
	json_array_foreach(json_object_get(r, "notes"), i, e) {
		const char *n = json_string_value(e), *q;
		if (!n || strncmp(n, "engine '", 8) != 0 || !(q = strchr(n + 8, '\'')))
			continue;
		char id[80];
		snprintf(id, sizeof(id), "engine:%.*s", (int)(q - n - 8), n + 8);
		cr_check_add(out, id, CR_CHECK_WARN, "install it on PATH or CORRAL_ENGINE_PATH, or fix its definition", "%s",
			     n);
	}
}

void cr_checks_node(const json_t *report, uint64_t largest_model, json_t *out)
{
	check_nvml(report, out);
	check_cuda_and_cc(report, out);
	check_shm(report, out);
	check_ports(report, out);
	check_disk(report, largest_model, out);
	check_clock(report, out);
	check_engines(report, out);
}

void cr_checks_address(const char *advertised, const char *seen, bool reachable, const char *probe_error,
		       json_t *out)
{
	if (!reachable)
		cr_check_add(out, "address", CR_CHECK_FAIL,
			     "open the worker port to the server, or start the worker with the --advertise address the "
			     "server can reach",
			     "the server cannot reach the worker at %s: %s", advertised ? advertised : "?",
			     probe_error ? probe_error : "no answer");
	else if (advertised && seen && *seen && strcmp(advertised, seen) != 0)
		cr_check_add(out, "address", CR_CHECK_WARN,
			     "make sure the other workers reach the advertised address too (NAT or several interfaces?)",
			     "the worker advertises %s but its requests come from %s", advertised, seen);
	else
		cr_check_add(out, "address", CR_CHECK_PASS, NULL, "the server reaches the worker at %s",
			     advertised ? advertised : "?");
}

/* ---- group checks ---- */

void cr_group_limits_defaults(struct cr_group_limits *l)
{
	l->rtt_tp_ms = 2;
	l->rtt_rpc_ms = 20;
}

/* The NVIDIA driver major version ("550"), or the ROCm version, or "". */
static void driver_key(const json_t *r, char *out, size_t n)
{
	const json_t *d = json_object_get(r, "drivers");
	const char *nv = cr_json_get_str(json_object_get(d, "nvidia"), "driver_version", NULL);
	const char *rocm = cr_json_get_str(json_object_get(d, "amd"), "rocm_version", NULL);
	if (nv)
		snprintf(out, n, "NVIDIA driver %.*s", (int)strcspn(nv, "."), nv);
	else if (rocm)
		snprintf(out, n, "ROCm %s", rocm);
	else
		snprintf(out, n, "no GPU driver");
}

/* The value of what for member m: "driver", "gpu", "python" or an engine
 * name; NULL when not reported (python). buf holds it when computed. */
static const char *member_value(const struct cr_group_member *m, const char *what, char *buf, size_t n)
{
	if (!strcmp(what, "driver")) {
		driver_key(m->report, buf, n);
		return buf;
	}
	if (!strcmp(what, "gpu")) { /* the GPU chosen on the node, not whichever comes first */
		const json_t *gpus = json_object_get(m->report, "gpus"), *g = json_array_get(gpus, 0), *x;
		size_t i;
		json_array_foreach(gpus, i, x)
			if (m->gpu_index >= 0 && cr_json_get_int(x, "index", -1) == m->gpu_index)
				g = x;
		return g ? cr_json_get_str(g, "name", "?") : "no GPU";
	}
	if (!strcmp(what, "python"))
		return cr_json_get_str(m->report, "python_version", NULL);
	const json_t *e = engine_of(m->report, what);
	if (!e && !strcmp(what, "llama.cpp"))
		e = engine_of(m->report, "llama.cpp-rpc");
	return e ? cr_json_get_str(e, "version", "?") : "not installed";
}

/* Members whose value of what differs from the leader's, named with both
 * values: "gpu-2 runs NVIDIA driver 535, gpu-1 and gpu-3 run NVIDIA driver 550". */
static bool mismatch(const struct cr_group_member *ms, int n, const char *what, const char *label, char *msg,
		     size_t len)
{
	char lead[128], odd[300] = "", same[300] = "", oddv[128] = "", buf[128];
	const char *lv = member_value(&ms[0], what, buf, sizeof(buf));
	snprintf(lead, sizeof(lead), "%s", lv ? lv : "");
	size_t lo = 0, ls = 0;
	int n_odd = 0, n_same = 0;
	for (int i = 0; i < n; i++) {
		const char *v = member_value(&ms[i], what, buf, sizeof(buf));
		if (!v && !strcmp(what, "python"))
			return false; /* not reported everywhere: nothing to compare */
		if (v && !strcmp(v, lead)) {
			if (ls < sizeof(same))
				ls += (size_t)snprintf(same + ls, sizeof(same) - ls, "%s%s", n_same ? " and " : "", ms[i].name);
			n_same++;
		} else {
			snprintf(oddv, sizeof(oddv), "%s", v ? v : "?");
			if (lo < sizeof(odd))
				lo += (size_t)snprintf(odd + lo, sizeof(odd) - lo, "%s%s", n_odd ? " and " : "", ms[i].name);
			n_odd++;
		}
	}
	if (!n_odd)
		return false;
	snprintf(msg, len, "%s run%s %s%s, %s run%s %s%s", odd, n_odd == 1 ? "s" : "", label, oddv, same,
		 n_same == 1 ? "s" : "", label, lead);
	return true;
}

static void group_versions(const struct cr_group_member *ms, int n, const char *engine, bool with_ray, json_t *out)
{
	char msg[700], fix[300], buf[128];
	bool vl = cr_engine_vllm_like(engine);
	if (vl) {
		char cpu[300] = "";
		size_t len = 0;
		for (int i = 0; i < n; i++)
			if (!gpu_count(ms[i].report, NULL) && len < sizeof(cpu))
				len += (size_t)snprintf(cpu + len, sizeof(cpu) - len, "%s%s", len ? ", " : "", ms[i].name);
		if (*cpu)
			cr_check_add(out, "cpu-only", CR_CHECK_FAIL,
				     "deploy with --engine llama.cpp (RPC spans CPU and GPU nodes), or use --selector to keep "
				     "CPU-only nodes out",
				     "%s %s no GPU: %s needs a GPU on every node of a multi-node group", cpu,
				     strchr(cpu, ',') ? "have" : "has", engine);
		if (mismatch(ms, n, "driver", "", msg, sizeof(msg))) {
			snprintf(fix, sizeof(fix), "install the same driver on every node of the group, or deploy with "
						   "--selector to exclude the odd ones");
			cr_check_add(out, "driver-mismatch", CR_CHECK_FAIL, fix,
				     "%s: %s across nodes (NCCL) needs the same driver major version on every node", msg,
				     engine);
		} else {
			cr_check_add(out, "driver-mismatch", CR_CHECK_PASS, NULL, "every node runs %s",
				     member_value(&ms[0], "driver", buf, sizeof(buf)));
		}
		if (mismatch(ms, n, "gpu", "", msg, sizeof(msg)))
			cr_check_add(out, "gpu-mismatch", CR_CHECK_FAIL,
				     "place the model on one GPU model (--selector), or use llama.cpp RPC for mixed GPUs",
				     "%s: %s splits layers evenly, so every node needs the same GPU model", msg, engine);
		else
			cr_check_add(out, "gpu-mismatch", CR_CHECK_PASS, NULL, "every node has %s",
				     member_value(&ms[0], "gpu", buf, sizeof(buf)));
	}
	const char *ename = vl ? engine : "llama.cpp";
	if (vl || !strcmp(engine, "llama.cpp")) {
		if (mismatch(ms, n, ename, "", msg, sizeof(msg)))
			cr_check_add(out, "engine-mismatch", CR_CHECK_FAIL,
				     "install the same engine build on every node (for llama.cpp RPC the protocol changes "
				     "between builds)",
				     "%s: %s %s", msg, ename, vl ? "versions must match across nodes" : "RPC needs one build everywhere");
		else
			cr_check_add(out, "engine-mismatch", CR_CHECK_PASS, NULL, "every node runs %s %s", ename,
				     member_value(&ms[0], ename, buf, sizeof(buf)));
	}
	if (vl && with_ray) {
		if (mismatch(ms, n, "ray", "", msg, sizeof(msg)))
			cr_check_add(out, "ray-mismatch", CR_CHECK_FAIL, "install the same Ray version on every node",
				     "%s: a Ray cluster needs one Ray version", msg);
		else
			cr_check_add(out, "ray-mismatch", CR_CHECK_PASS, NULL, "every node runs %s",
				     member_value(&ms[0], "ray", buf, sizeof(buf)));
		if (mismatch(ms, n, "python", "Python ", msg, sizeof(msg)))
			cr_check_add(out, "python-mismatch", CR_CHECK_FAIL, "use the same Python version on every node",
				     "%s: Ray needs one Python version", msg);
	}
}

/* What member a measured of member b: rtt in ms, or -1 with why. */
static double peer_rtt(const struct cr_group_member *a, const struct cr_group_member *b, const char **why)
{
	const json_t *p = json_object_get(json_object_get(a->report, "peers"), b->id);
	*why = NULL;
	if (!p)
		return -2; /* not measured */
	const json_t *rtt = json_object_get(p, "rtt_ms");
	if (!json_is_number(rtt)) {
		*why = cr_json_get_str(p, "error", "no answer");
		return -1;
	}
	return json_number_value(rtt);
}

static void group_network(const struct cr_group_member *ms, int n, const char *engine,
			  const struct cr_group_limits *lim, json_t *out)
{
	double limit = cr_engine_vllm_like(engine) ? lim->rtt_tp_ms : lim->rtt_rpc_ms, worst = 0;
	char unreach[600] = "", slow[600] = "", unmeasured[300] = "";
	size_t lu = 0, ls = 0, lm = 0;
	for (int i = 1; i < n; i++) {
		for (int dir = 0; dir < 2; dir++) {
			const struct cr_group_member *a = dir ? &ms[i] : &ms[0], *b = dir ? &ms[0] : &ms[i];
			const char *why;
			double rtt = peer_rtt(a, b, &why);
			if (rtt == -2) {
				if (lm < sizeof(unmeasured))
					lm += (size_t)snprintf(unmeasured + lm, sizeof(unmeasured) - lm, "%s%s to %s",
							       lm ? ", " : "", a->name, b->name);
			} else if (rtt < 0) {
				if (lu < sizeof(unreach))
					lu += (size_t)snprintf(unreach + lu, sizeof(unreach) - lu, "%s%s cannot reach %s (%s)",
							       lu ? "; " : "", a->name, b->name, why);
			} else {
				if (rtt > worst)
					worst = rtt;
				if (rtt > limit && ls < sizeof(slow))
					ls += (size_t)snprintf(slow + ls, sizeof(slow) - ls, "%s%s to %s %.2f ms", ls ? ", " : "",
							       a->name, b->name, rtt);
			}
		}
	}
	if (*unreach)
		cr_check_add(out, "reach", CR_CHECK_FAIL,
			     "open the worker ports and the engine port range between these nodes (firewall, security "
			     "groups), or check each worker's advertised address",
			     "%s", unreach);
	else if (*unmeasured)
		cr_check_add(out, "reach", CR_CHECK_WARN, "wait for the workers' next probes (every 30 s)",
			     "not measured yet: %s", unmeasured);
	else
		cr_check_add(out, "reach", CR_CHECK_PASS, NULL, "the leader %s and its %d follower(s) reach each other",
			     ms[0].name, n - 1);
	if (*slow)
		cr_check_add(out, "rtt", CR_CHECK_FAIL,
			     "put the group on one network segment, use --selector to pick close nodes, or raise the "
			     "server's limit (--rtt-limit-tp / --rtt-limit-rpc)",
			     "round-trip time %s is over the %.0f ms limit for %s across nodes", slow, limit,
			     cr_engine_vllm_like(engine) ? "tensor parallelism" : "llama.cpp RPC");
	else if (!*unreach && !*unmeasured)
		cr_check_add(out, "rtt", CR_CHECK_PASS, NULL, "round-trip time at most %.2f ms (limit %.0f ms)", worst, limit);
}

static void group_shm_and_files(const struct cr_group_member *ms, int n, const char *engine, bool downloadable,
				json_t *out)
{
	if (cr_engine_vllm_like(engine)) {
		char low[400] = "";
		size_t len = 0;
		for (int i = 0; i < n; i++) {
			uint64_t shm = (uint64_t)cr_json_get_int(json_object_get(ms[i].report, "system"), "shm_bytes", 0);
			if (shm < SHM_NEED && len < sizeof(low))
				len += (size_t)snprintf(low + len, sizeof(low) - len, "%s%s has %.0f MiB", len ? ", " : "",
							ms[i].name, (double)shm / MIB);
		}
		if (*low)
			cr_check_add(out, "shm", CR_CHECK_WARN,
				     "give /dev/shm 1 GiB or more on those nodes (docker run --shm-size=16g)",
				     "/dev/shm: %s; NCCL needs 1 GiB or more", low);
		else
			cr_check_add(out, "shm", CR_CHECK_PASS, NULL, "/dev/shm is 1 GiB or more on every node");
	}
	char missing[400] = "";
	size_t len = 0;
	for (int i = 0; i < n; i++) {
		bool bad = ms[i].needs_file && (ms[i].file_state == 3 || (ms[i].file_state == 2 && !downloadable));
		if (bad && len < sizeof(missing))
			len += (size_t)snprintf(missing + len, sizeof(missing) - len, "%s%s (%s)", len ? ", " : "", ms[i].name,
						ms[i].file_state == 3 ? "invalid" : "missing");
	}
	if (*missing)
		cr_check_add(out, "model-file", CR_CHECK_FAIL,
			     "put the file at the same path on those nodes (shared storage), or deploy from a url",
			     "the model file is not usable on %s", missing);
	else
		cr_check_add(out, "model-file", CR_CHECK_PASS, NULL, "the model file is present%s where needed",
			     downloadable ? " or downloadable" : "");
}

enum cr_check_level cr_checks_group(const struct cr_group_member *members, int n, const char *engine, bool with_ray,
				    bool downloadable, const struct cr_group_limits *limits, json_t *out)
{
	size_t first = json_array_size(out);
	group_versions(members, n, engine, with_ray, out);
	group_network(members, n, engine, limits, out);
	group_shm_and_files(members, n, engine, downloadable, out);
	enum cr_check_level worst = CR_CHECK_PASS;
	for (size_t i = first; i < json_array_size(out); i++)
		if (level_of(json_array_get(out, i)) > worst)
			worst = level_of(json_array_get(out, i));
	return worst;
}

void cr_checks_group_key(const json_t *report, const char *engine, bool with_ray, char *out, size_t n)
{
	struct cr_group_member m = { "", "", report, false, 0, -1 };
	char drv[128] = "", buf[128];
	bool vl = cr_engine_vllm_like(engine);
	const char *ev = member_value(&m, vl ? engine : "llama.cpp", buf, sizeof(buf));
	char ever[128];
	snprintf(ever, sizeof(ever), "%s", ev ? ev : "");
	if (vl)
		driver_key(report, drv, sizeof(drv));
	const char *ray = vl && with_ray ? member_value(&m, "ray", buf, sizeof(buf)) : "";
	char rayv[128];
	snprintf(rayv, sizeof(rayv), "%s", ray ? ray : "");
	/* Python is not in the key: not every worker reports it, and an unknown one
	 * must not keep a node out; the python-mismatch check catches real ones */
	snprintf(out, n, "%s|%s|%s|%s", drv, vl ? (gpu_count(report, NULL) ? "gpu" : "cpu") : "", ever, rayv);
}
