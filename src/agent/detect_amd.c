/* AMD GPU detection from the amdgpu driver's sysfs files:
 * ROOT/class/drm/cardN/device/{vendor, mem_info_vram_total, mem_info_vram_used,
 * gpu_busy_percent, product_name, unique_id, hwmon/hwmonM/temp1_input}. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "agent/detect.h"
#include "base/mem.h"
#include "base/util.h"

static char *read_attr(const char *dev, const char *name)
{
	char *path = cr_xasprintf("%s/%s", dev, name);
	char *text = NULL;
	if (cr_file_read(path, 4096, &text, NULL, NULL) != 0)
		text = NULL;
	free(path);
	if (text)
		cr_trim(text);
	return text;
}

static bool read_u64(const char *dev, const char *name, long long *out)
{
	char *t = read_attr(dev, name);
	bool ok = t && cr_parse_int(t, 0, INT64_MAX, out);
	free(t);
	return ok;
}

static void add_temperature(const char *dev, json_t *gpu)
{
	char *hwmon = cr_xasprintf("%s/hwmon", dev);
	DIR *d = opendir(hwmon);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d))) {
			if (strncmp(e->d_name, "hwmon", 5) != 0)
				continue;
			char *rel = cr_xasprintf("hwmon/%s/temp1_input", e->d_name);
			long long milli;
			if (read_u64(dev, rel, &milli))
				json_object_set_new(gpu, "temperature", json_integer(milli / 1000));
			free(rel);
			break;
		}
		closedir(d);
	}
	free(hwmon);
}

static int card_number(const char *name)
{
	long long n;
	if (strncmp(name, "card", 4) != 0 || !cr_parse_int(name + 4, 0, 1 << 20, &n))
		return -1; /* connectors like card0-DP-1 are not GPUs */
	return (int)n;
}

static int by_number(const struct dirent **a, const struct dirent **b)
{
	return card_number((*a)->d_name) - card_number((*b)->d_name);
}

static int is_card(const struct dirent *e)
{
	return card_number(e->d_name) >= 0;
}

void cr_detect_amd(const char *root, json_t *gpus, json_t *notes)
{
	char *drm = cr_xasprintf("%s/class/drm", root);
	struct dirent **cards = NULL;
	int n = scandir(drm, &cards, is_card, by_number);
	int vendor_index = 0;
	for (int i = 0; i < n; i++) {
		char *dev = cr_xasprintf("%s/%s/device", drm, cards[i]->d_name);
		char *vendor = read_attr(dev, "vendor");
		long long total, used, busy;
		if (!vendor || strcmp(vendor, "0x1002") != 0)
			goto next;
		if (!read_u64(dev, "mem_info_vram_total", &total)) {
			json_array_append_new(notes, json_sprintf("AMD GPU %s skipped: '%s/mem_info_vram_total' is "
								  "unreadable; is the amdgpu driver loaded?",
								  cards[i]->d_name, dev));
			goto next;
		}
		if (!read_u64(dev, "mem_info_vram_used", &used))
			used = 0;
		char *name = read_attr(dev, "product_name");
		char *uid = read_attr(dev, "unique_id");
		json_t *g = json_pack("{s:i,s:s,s:i,s:s,s:s,s:I,s:I,s:I,s:s}", "index", (int)json_array_size(gpus),
				      "vendor", "amd", "vendor_index", vendor_index++, "name",
				      name && *name ? name : "AMD GPU", "uuid", uid ? uid : "", "memory_total",
				      (json_int_t)total, "memory_used", (json_int_t)used, "memory_free",
				      (json_int_t)(total - used), "source", "sysfs");
		free(name);
		free(uid);
		if (read_u64(dev, "gpu_busy_percent", &busy))
			json_object_set_new(g, "utilization", json_integer(busy));
		add_temperature(dev, g);
		json_array_append_new(gpus, g);
	next:
		free(vendor);
		free(dev);
		free(cards[i]);
	}
	free(cards);
	free(drm);
}
