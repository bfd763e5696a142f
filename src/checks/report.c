/* Splitting and merging the dynamic half of worker reports, see report.h. */
#include "checks/report.h"

static const char *const gpu_fields[] = { "memory_used", "memory_free", "utilization", "temperature",
					  "power_draw_w" };

/* Move obj[key] to dst[as] when present. */
static void move(json_t *obj, const char *key, json_t *dst, const char *as)
{
	json_t *v = json_object_get(obj, key);
	if (!v)
		return;
	json_object_set(dst, as, v);
	json_object_del(obj, key);
}

json_t *cr_report_split(json_t *report)
{
	json_t *dyn = json_object();
	json_t *sys = json_object_get(report, "system");
	move(json_object_get(sys, "memory"), "available", dyn, "memory_available");
	move(json_object_get(sys, "swap"), "free", dyn, "swap_free");
	move(json_object_get(sys, "disk"), "free", dyn, "disk_free");
	move(sys, "uptime_s", dyn, "uptime_s");
	move(report, "peers", dyn, "peers");
	json_t *gpus = json_array();
	size_t i;
	json_t *g;
	json_array_foreach(json_object_get(report, "gpus"), i, g) {
		json_t *d = json_object();
		for (size_t k = 0; k < sizeof(gpu_fields) / sizeof(gpu_fields[0]); k++)
			move(g, gpu_fields[k], d, gpu_fields[k]);
		json_array_append_new(gpus, d);
	}
	json_object_set_new(dyn, "gpus", gpus);
	return dyn;
}

static void put(json_t *obj, const char *key, json_t *dyn, const char *from)
{
	json_t *v = json_object_get(dyn, from);
	if (obj && v)
		json_object_set(obj, key, v);
}

void cr_report_merge(json_t *report, json_t *dynamic)
{
	json_t *sys = json_object_get(report, "system");
	put(json_object_get(sys, "memory"), "available", dynamic, "memory_available");
	put(json_object_get(sys, "swap"), "free", dynamic, "swap_free");
	put(json_object_get(sys, "disk"), "free", dynamic, "disk_free");
	put(sys, "uptime_s", dynamic, "uptime_s");
	put(report, "peers", dynamic, "peers");
	json_t *gpus = json_object_get(report, "gpus");
	size_t i;
	json_t *d;
	json_array_foreach(json_object_get(dynamic, "gpus"), i, d) {
		json_t *g = json_array_get(gpus, i);
		if (!json_is_object(g) || !json_is_object(d))
			continue;
		for (size_t k = 0; k < sizeof(gpu_fields) / sizeof(gpu_fields[0]); k++)
			put(g, gpu_fields[k], d, gpu_fields[k]);
	}
}
