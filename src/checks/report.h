/* The worker report's two halves. A full report carries everything; a light
 * report carries only the fields that change from one interval to the next
 * (free memory, GPU memory and utilisation, temperatures, power, uptime), so
 * that a large cluster's status traffic costs little to send and to parse.
 *
 *   full:  {"base": N, "system": {...}, "gpus": [...], "drivers": {...}, "notes": [...]}
 *   light: {"base": N, "dynamic": {"memory_available", "swap_free", "disk_free",
 *           "uptime_s", "gpus": [{"memory_used", "memory_free", "utilization",
 *           "temperature", "power_draw_w"}, ...]}}
 * A light report applies to the full report with the same "base". */
#ifndef CR_CHECKS_REPORT_H
#define CR_CHECKS_REPORT_H

#include <jansson.h>

/* Split a full report: returns a new object with its dynamic fields (the
 * "dynamic" member of a light report) and removes them from report, which
 * becomes the static part. */
json_t *cr_report_split(json_t *report);

/* Apply a "dynamic" object to a full report in place. Extra GPUs in dynamic
 * are ignored. */
void cr_report_merge(json_t *report, json_t *dynamic);

#endif
