/* Model file inspection: GGUF headers through the pure parser, safetensors
 * directories through config.json and each shard's JSON header. */
#include "agent/modelfile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/mem.h"
#include "base/util.h"

static int read_prefix(int fd, uint8_t **buf, size_t *have, size_t want, struct cr_err *err, const char *path)
{
	*buf = cr_xrealloc(*buf, want);
	while (*have < want) {
		ssize_t n = pread(fd, *buf + *have, want - *have, (off_t)*have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return cr_err_set(err, CR_EINPUT, "check the file and its permissions", "read('%s') failed: %s",
					  path, n < 0 ? strerror(errno) : "unexpected end of file");
		*have += (size_t)n;
	}
	return 0;
}

/* A cr_gguf_reader for local files. */
static int read_gguf(const char *path, struct cr_gguf **out, uint64_t *sizep, void *arg, struct cr_err *err)
{
	(void)arg;
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cr_err_set(err, errno == ENOENT ? -ENOENT : CR_EINPUT, "check the path and its permissions",
				  "open('%s') failed: %s", path, strerror(errno));
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return cr_err_set(err, CR_EINPUT, "give the path of a regular file", "'%s' is not a regular file", path);
	}
	uint64_t size = (uint64_t)st.st_size;
	uint8_t *buf = NULL;
	size_t have = 0, want = (size_t)(size < 1u << 20 ? size : 1u << 20);
	int rc;
	for (;;) {
		rc = read_prefix(fd, &buf, &have, want, err, path);
		if (rc)
			break;
		uint64_t need = 0;
		rc = cr_gguf_parse(buf, have, size, out, &need, err);
		if (rc != -EAGAIN)
			break;
		if (need > CR_MODELFILE_HEADER_MAX) {
			rc = cr_err_set(err, CR_EINPUT, "check that this is a model file and not something else",
					"'%s': GGUF header is larger than %u MiB", path, CR_MODELFILE_HEADER_MAX >> 20);
			break;
		}
		uint64_t next = (uint64_t)want * 2 > need ? (uint64_t)want * 2 : need;
		want = (size_t)(next < size ? next : size);
	}
	close(fd);
	free(buf);
	*sizep = size;
	return rc;
}

/* Bytes of tensor data in one safetensors file: its size minus the header. */
static int safetensors_bytes(const char *path, uint64_t *bytes, struct cr_err *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	uint8_t len8[8];
	struct stat st;
	if (fd < 0 || fstat(fd, &st) || pread(fd, len8, 8, 0) != 8) {
		if (fd >= 0)
			close(fd);
		return cr_err_set(err, CR_EINPUT, "re-download the model", "'%s' is not a readable safetensors file", path);
	}
	close(fd);
	uint64_t hlen = 0;
	for (int i = 0; i < 8; i++)
		hlen |= (uint64_t)len8[i] << (8 * i);
	if (hlen > (uint64_t)st.st_size - 8)
		return cr_err_set(err, CR_EINPUT, "re-download the model",
				  "'%s': safetensors header length %llu is past the end of the file", path,
				  (unsigned long long)hlen);
	*bytes = (uint64_t)st.st_size - 8 - hlen;
	return 0;
}

static int inspect_dir(const char *path, struct cr_model_shape *shape, struct cr_err *err)
{
	char *cfg_path = cr_xasprintf("%s/config.json", path);
	char *text = NULL;
	size_t len = 0;
	json_t *cfg = NULL;
	uint64_t total = 0;
	int rc = cr_file_read(cfg_path, 4u << 20, &text, &len, err);
	if (rc) {
		rc = cr_err_set(err, CR_EINPUT, "point --path at a .gguf file or a Hugging Face model directory",
				"'%s' is a directory without a readable config.json", path);
		goto out;
	}
	json_error_t je;
	cfg = json_loadb(text, len, 0, &je);
	if (!json_is_object(cfg)) {
		rc = cr_err_set(err, CR_EINPUT, "re-download the model", "'%s': invalid JSON at line %d: %s", cfg_path,
				je.line, je.text);
		goto out;
	}
	DIR *d = opendir(path);
	struct dirent *e;
	int shards = 0;
	while (d && !rc && (e = readdir(d))) {
		size_t n = strlen(e->d_name);
		if (n < 12 || strcmp(e->d_name + n - 12, ".safetensors") != 0)
			continue;
		char *f = cr_xasprintf("%s/%s", path, e->d_name);
		uint64_t b = 0;
		rc = safetensors_bytes(f, &b, err);
		free(f);
		total += b;
		shards++;
	}
	if (d)
		closedir(d);
	if (!rc && !shards)
		rc = cr_err_set(err, CR_EINPUT, "download the weights next to config.json",
				"'%s' has config.json but no .safetensors files", path);
	if (!rc)
		rc = cr_shape_from_config(cfg, total, shape, err);
out:
	json_decref(cfg);
	free(text);
	free(cfg_path);
	return rc;
}

int cr_modelfile_inspect(const char *path, struct cr_model_shape *shape, struct cr_err *err)
{
	struct stat st;
	if (stat(path, &st) != 0)
		return cr_err_set(err, errno == ENOENT ? -ENOENT : CR_EINPUT,
				  "copy the model to this path on the worker, or deploy with --url",
				  "stat('%s') failed: %s", path, strerror(errno));
	if (S_ISDIR(st.st_mode))
		return inspect_dir(path, shape, err);
	if (!S_ISREG(st.st_mode))
		return cr_err_set(err, CR_EINPUT, "give the path of a regular file", "'%s' is not a regular file", path);
	return cr_shape_from_gguf_source(path, read_gguf, NULL, shape, err);
}

json_t *cr_modelfile_report(const char *path)
{
	struct cr_model_shape shape = CR_MODEL_SHAPE_INIT;
	struct cr_err err = CR_ERR_INIT;
	int rc = cr_modelfile_inspect(path, &shape, &err);
	json_t *j = json_pack("{s:s,s:b}", "path", path, "exists", rc != -ENOENT);
	if (rc == 0) {
		json_object_set_new(j, "size", json_integer((json_int_t)shape.file_bytes));
		json_object_set_new(j, "format", json_string(shape.format));
		json_object_set_new(j, "shape", cr_shape_to_json(&shape));
	} else {
		json_object_set_new(j, "error", json_pack("{s:s,s:s}", "message", err.message, "fix", err.fix));
	}
	cr_shape_release(&shape);
	return j;
}
