/* Unit tests of src/base: buffers, maps, labels, numbers, JSON fields, SSE. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/json.h"
#include "base/map.h"
#include "base/mem.h"
#include "base/sse.h"
#include "base/util.h"

Test(buf, grows_and_enforces_cap)
{
	struct cr_buf b = CR_BUF_INIT(10);
	cr_assert_eq(cr_buf_adds(&b, "hello"), 0);
	cr_assert_eq(cr_buf_addf(&b, "%d", 1234), 0);
	cr_assert_str_eq(cr_buf_str(&b), "hello1234");
	cr_assert_eq(cr_buf_adds(&b, "xy"), CR_ETOOBIG, "appending past the cap must fail");
	cr_assert_str_eq(cr_buf_str(&b), "hello1234", "a failed append leaves the buffer unchanged");
	char *s = cr_buf_detach(&b);
	cr_assert_str_eq(s, "hello1234");
	cr_assert_eq(b.len, 0);
	free(s);
}

Test(map, put_get_delete_and_grow)
{
	struct cr_map m = CR_MAP_INIT;
	char keys[1000][16];
	for (int i = 0; i < 1000; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%d", i);
		cr_assert_null(cr_map_put(&m, keys[i], keys[i]));
	}
	cr_assert_eq(m.count, 1000);
	for (int i = 0; i < 1000; i += 2)
		cr_assert_eq(cr_map_del(&m, keys[i]), keys[i]);
	cr_assert_eq(m.count, 500);
	for (int i = 0; i < 1000; i++)
		cr_assert_eq(cr_map_get(&m, keys[i]), i % 2 ? keys[i] : NULL, "key %s", keys[i]);
	size_t it = 0, n = 0;
	while (cr_map_next(&m, &it, NULL, NULL))
		n++;
	cr_assert_eq(n, 500);
	cr_assert_eq(cr_map_put(&m, "k1", "other"), keys[1], "replacing returns the old value");
	cr_map_release(&m);
}

Test(labels, parses_pairs_and_rejects_bad_ones)
{
	json_t *l = NULL;
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(cr_labels_parse("gpu=h100,zone=eu-1,empty=", &l, &err), 0);
	cr_assert_str_eq(json_string_value(json_object_get(l, "gpu")), "h100");
	cr_assert_str_eq(json_string_value(json_object_get(l, "empty")), "");
	cr_assert_eq(json_object_size(l), 3);
	json_decref(l);
	cr_assert_eq(cr_labels_parse("novalue", &l, &err), CR_EINPUT);
	cr_assert(strstr(err.message, "novalue"), "message names the bad pair: %s", err.message);
	cr_assert_eq(cr_labels_parse("bad key=1", &l, &err), CR_EINPUT);
	cr_assert_eq(cr_labels_parse("", &l, &err), 0);
	cr_assert_eq(json_object_size(l), 0);
	json_decref(l);
}

Test(util, parse_int_rejects_junk_and_range)
{
	long long v;
	cr_assert(cr_parse_int("8080", 1, 65535, &v));
	cr_assert_eq(v, 8080);
	cr_assert_not(cr_parse_int("80x", 1, 65535, &v));
	cr_assert_not(cr_parse_int("", 1, 65535, &v));
	cr_assert_not(cr_parse_int("70000", 1, 65535, &v));
	cr_assert_not(cr_parse_int("-1", 0, 10, &v));
}

Test(util, bytes_human)
{
	char out[32];
	cr_bytes_human(512, out, sizeof(out));
	cr_assert_str_eq(out, "512 B");
	cr_bytes_human(85899345920ULL, out, sizeof(out));
	cr_assert_str_eq(out, "80.0 GiB");
}

Test(json, typed_fields_name_the_field)
{
	struct cr_err err = CR_ERR_INIT;
	const char *text = "{\"port\": \"x\", \"name\": \"w\", \"n\": 70000}";
	json_t *o = cr_json_parse_object(text, strlen(text), &err);
	cr_assert_not_null(o, "%s", err.message);
	long long v = 0;
	const char *s = NULL;
	cr_assert_eq(cr_json_int(o, "port", 1, 65535, &v, &err), CR_EINPUT);
	cr_assert(strstr(err.message, "'port'"), "%s", err.message);
	cr_assert_eq(cr_json_int(o, "n", 1, 65535, &v, &err), CR_EINPUT);
	cr_assert(strstr(err.message, "70000"), "%s", err.message);
	cr_assert_eq(cr_json_req_str(o, "name", &s, &err), 0);
	cr_assert_str_eq(s, "w");
	cr_assert_eq(cr_json_req_str(o, "missing", &s, &err), CR_EINPUT);
	cr_assert(strstr(err.message, "required"), "%s", err.message);
	cr_assert_eq(cr_json_int(o, "absent", 1, 2, &v, &err), 0, "absent optional fields are fine");
	json_decref(o);
}

Test(json, malformed_and_non_object_bodies)
{
	struct cr_err err = CR_ERR_INIT;
	cr_assert_null(cr_json_parse_object("{\"a\":", 5, &err));
	cr_assert_eq(err.code, CR_EINPUT);
	cr_assert(strstr(err.message, "line 1"), "%s", err.message);
	cr_assert_null(cr_json_parse_object("[1]", 3, &err));
	cr_assert(strstr(err.message, "object"), "%s", err.message);
	cr_assert_null(cr_json_parse_object("{\"a\":1,\"a\":2}", 13, &err), "duplicate keys are rejected");
}

struct events {
	char names[8][32];
	char data[8][64];
	int n;
};

static int collect(const char *event, const char *data, void *arg)
{
	struct events *e = arg;
	snprintf(e->names[e->n], 32, "%s", event);
	snprintf(e->data[e->n], 64, "%s", data);
	e->n++;
	return 0;
}

Test(sse, events_across_chunks_and_line_endings)
{
	const char *stream = "event: snapshot\r\ndata: {\"a\":1}\r\n\r\n: keepalive\n\ndata: x\ndata: y\n\nevent: e\rdata:z\r\r";
	struct cr_sse p;
	struct events e = { .n = 0 };
	cr_sse_init(&p, 1024);
	for (size_t i = 0; i < strlen(stream); i++) /* one byte at a time */
		cr_assert_eq(cr_sse_feed(&p, stream + i, 1, collect, &e), 0);
	cr_sse_release(&p);
	cr_assert_eq(e.n, 3, "the keepalive comment is not an event");
	cr_assert_str_eq(e.names[0], "snapshot");
	cr_assert_str_eq(e.data[0], "{\"a\":1}");
	cr_assert_str_eq(e.names[1], "message");
	cr_assert_str_eq(e.data[1], "x\ny");
	cr_assert_str_eq(e.names[2], "e");
	cr_assert_str_eq(e.data[2], "z");
}

Test(sse, overlong_line_is_refused)
{
	struct cr_sse p;
	struct events e = { .n = 0 };
	cr_sse_init(&p, 16);
	const char *line = "data: 0123456789abcdefghijklmnop\n\n";
	cr_assert_eq(cr_sse_feed(&p, line, strlen(line), collect, &e), CR_ETOOBIG);
	cr_assert_eq(e.n, 0);
	cr_sse_release(&p);
}

Test(files, write_is_atomic_with_mode)
{
	char dir[] = "/tmp/cr-test-XXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	char *sub = cr_xasprintf("%s/a/b", dir);
	cr_assert_eq(cr_mkdir_p(sub, 0700, NULL), 0);
	char *path = cr_xasprintf("%s/secret", sub);
	cr_assert_eq(cr_file_write(path, "s3cret\n", 7, 0600, NULL), 0);
	struct stat st;
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0600);
	char *text = NULL;
	cr_assert_eq(cr_file_read(path, 100, &text, NULL, NULL), 0);
	cr_assert_str_eq(text, "s3cret\n");
	free(text);
	struct cr_err err = CR_ERR_INIT;
	cr_assert_eq(cr_file_read(path, 3, &text, NULL, &err), CR_ETOOBIG);
	free(path);
	free(sub);
}

/* Listings come in a stable order: by a key, then a second one. */
Test(json, arrays_of_objects_sort_by_their_keys)
{
	json_t *a = json_loads("[{\"m\":\"b\",\"t\":\"2\"},{\"m\":\"a\",\"t\":\"9\"},{\"m\":\"b\",\"t\":\"1\"},{\"x\":1}]", 0,
			       NULL);
	cr_json_sort(a, "m", "t");
	char *s = cr_json_dump(a);
	cr_assert_str_eq(s, "[{\"x\":1},{\"m\":\"a\",\"t\":\"9\"},{\"m\":\"b\",\"t\":\"1\"},{\"m\":\"b\",\"t\":\"2\"}]");
	free(s);
	json_decref(a);
}
