/* Clocks, files, number parsing, see util.h. */
#include "base/util.h"

#include <ctype.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/err.h"
#include "base/mem.h"

bool cr_parse_bytes(const char *s, uint64_t *out)
{
	char *end;
	double v = strtod(s, &end);
	if (end == s || v < 0)
		return false;
	static const char units[] = "KMGT";
	double mult = 1;
	if (*end) {
		const char *u = strchr(units, toupper((unsigned char)*end));
		if (!u)
			return false;
		for (const char *p = units; p <= u; p++)
			mult *= 1024;
		end++;
		if (*end == 'i' || *end == 'I')
			end++;
		if (*end == 'B' || *end == 'b')
			end++;
	}
	if (*end || v * mult > 1.8e19)
		return false;
	*out = (uint64_t)(v * mult);
	return true;
}

int64_t cr_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t cr_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cr_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cr_time_format(int64_t wall_ms, char *out, size_t n)
{
	time_t secs = (time_t)(wall_ms / 1000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	char base[24];
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, n, "%s.%03dZ", base, (int)(wall_ms % 1000));
}

int cr_file_read(const char *path, size_t cap, char **out, size_t *len, struct cr_err *err)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return cr_err_set(err, -errno, NULL, "open('%s') failed: %s", path, strerror(errno));
	size_t alloc = 4096, n = 0;
	char *data = cr_xmalloc(alloc);
	int rc = 0;
	for (;;) {
		if (n + 1 >= alloc) {
			alloc *= 2;
			data = cr_xrealloc(data, alloc);
		}
		size_t got = fread(data + n, 1, alloc - n - 1, f);
		n += got;
		if (n > cap) {
			rc = cr_err_set(err, CR_ETOOBIG, NULL, "'%s' is larger than %zu bytes", path, cap);
			break;
		}
		if (got == 0) {
			if (ferror(f))
				rc = cr_err_set(err, -EIO, NULL, "read('%s') failed", path);
			break;
		}
	}
	fclose(f);
	if (rc) {
		free(data);
		return rc;
	}
	data[n] = '\0';
	*out = data;
	if (len)
		*len = n;
	return 0;
}

int cr_file_write(const char *path, const char *data, size_t len, mode_t mode, struct cr_err *err)
{
	char *tmp = cr_xasprintf("%s.tmp.%ld", path, (long)getpid());
	int rc = 0;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0) {
		rc = cr_err_set(err, -errno, NULL, "open('%s') failed: %s", tmp, strerror(errno));
		goto out_free;
	}
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(fd, data + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			rc = cr_err_set(err, -errno, NULL, "write('%s') failed: %s", tmp, strerror(errno));
			goto out_close;
		}
		off += (size_t)w;
	}
	if (fchmod(fd, mode) < 0 || fsync(fd) < 0) {
		rc = cr_err_set(err, -errno, NULL, "fsync('%s') failed: %s", tmp, strerror(errno));
		goto out_close;
	}
	if (rename(tmp, path) < 0)
		rc = cr_err_set(err, -errno, NULL, "rename('%s') failed: %s", path, strerror(errno));
out_close:
	close(fd);
	if (rc)
		unlink(tmp);
out_free:
	free(tmp);
	return rc;
}

int cr_mkdir_p(const char *path, mode_t mode, struct cr_err *err)
{
	char *p = cr_xstrdup(path);
	int rc = 0;
	for (char *s = p + 1;; s++) {
		char c = *s;
		if (c != '/' && c != '\0')
			continue;
		*s = '\0';
		if (mkdir(p, mode) < 0 && errno != EEXIST) {
			rc = cr_err_set(err, -errno, "check the directory's permissions or choose another --data-dir",
					"mkdir('%s') failed: %s", p, strerror(errno));
			break;
		}
		*s = c;
		if (c == '\0')
			break;
	}
	free(p);
	return rc;
}

bool cr_parse_int(const char *s, long long min, long long max, long long *out)
{
	if (!s || !*s)
		return false;
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

void cr_bytes_human(uint64_t bytes, char *out, size_t n)
{
	static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)bytes;
	int u = 0;
	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, n, "%llu B", (unsigned long long)bytes);
	else
		snprintf(out, n, "%.1f %s", v, units[u]);
}

char *cr_trim(char *s)
{
	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
		s[--n] = '\0';
	return s;
}

char **cr_server_urls(const char *list, int *n)
{
	char **out = cr_xcalloc(strlen(list) / 2 + 2, sizeof(*out));
	*n = 0;
	const char *p = list;
	while (*p) {
		size_t len = strcspn(p, ",");
		const char *a = p, *b = p + len;
		while (a < b && isspace((unsigned char)*a))
			a++;
		while (b > a && (isspace((unsigned char)b[-1]) || b[-1] == '/'))
			b--;
		if (b > a)
			out[(*n)++] = cr_xstrndup(a, (size_t)(b - a));
		p += len + (p[len] == ',');
	}
	if (!*n)
		out[(*n)++] = cr_xstrdup(list);
	return out;
}
