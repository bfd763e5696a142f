/* Unit tests of the split of worker reports into static and dynamic halves. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "checks/report.h"

static json_t *sample(void)
{
	return json_pack("{s:{s:{s:s,s:i},s:{s:I,s:I},s:{s:I,s:I},s:{s:s,s:I,s:I},s:i,s:I},"
			 "s:[{s:i,s:s,s:I,s:I,s:I,s:i,s:i,s:f},{s:i,s:s,s:I,s:I,s:I}],s:[]}",
			 "system", "cpu", "model", "EPYC", "cores", 8, "memory", "total", (json_int_t)100, "available",
			 (json_int_t)60, "swap", "total", (json_int_t)10, "free", (json_int_t)5, "disk", "path", "/d",
			 "total", (json_int_t)1000, "free", (json_int_t)400, "uptime_s", 77, "shm_bytes", (json_int_t)64,
			 "gpus", "index", 0, "vendor", "nvidia", "memory_total", (json_int_t)80, "memory_used",
			 (json_int_t)8, "memory_free", (json_int_t)72, "utilization", 50, "temperature", 60,
			 "power_draw_w", 300.0, "index", 1, "vendor", "amd", "memory_total", (json_int_t)64,
			 "memory_used", (json_int_t)0, "memory_free", (json_int_t)64, "notes");
}

Test(report, split_then_merge_restores_the_full_report)
{
	json_t *full = sample();
	json_t *stat = json_deep_copy(full);
	json_t *dyn = cr_report_split(stat);
	json_t *sys = json_object_get(stat, "system");
	cr_assert_null(json_object_get(json_object_get(sys, "memory"), "available"));
	cr_assert_null(json_object_get(sys, "uptime_s"));
	cr_assert_null(json_object_get(json_array_get(json_object_get(stat, "gpus"), 0), "utilization"));
	cr_assert_not_null(json_object_get(json_array_get(json_object_get(stat, "gpus"), 0), "memory_total"),
			   "static fields stay");
	cr_assert_eq(json_integer_value(json_object_get(dyn, "memory_available")), 60);
	cr_assert_eq(json_integer_value(json_object_get(dyn, "disk_free")), 400);
	cr_assert_eq(json_array_size(json_object_get(dyn, "gpus")), 2);
	cr_report_merge(stat, dyn);
	cr_assert(json_equal(stat, full), "merge(split(r)) == r");
	json_decref(full);
	json_decref(stat);
	json_decref(dyn);
}

Test(report, merge_updates_values_and_ignores_extra_gpus)
{
	json_t *full = sample();
	json_t *dyn = json_pack("{s:I,s:[{s:I,s:i},{s:i},{s:i}]}", "memory_available", (json_int_t)1, "gpus",
				"memory_used", (json_int_t)70, "utilization", 99, "utilization", 5, "utilization", 7);
	cr_report_merge(full, dyn);
	json_t *g0 = json_array_get(json_object_get(full, "gpus"), 0);
	cr_assert_eq(json_integer_value(json_object_get(g0, "memory_used")), 70);
	cr_assert_eq(json_integer_value(json_object_get(g0, "utilization")), 99);
	cr_assert_eq(json_array_size(json_object_get(full, "gpus")), 2);
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(json_object_get(full, "system"), "memory"),
							"available")), 1);
	json_decref(full);
	json_decref(dyn);
}
