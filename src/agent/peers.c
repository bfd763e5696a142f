/* Peer probes with libcurl: one easy handle per probe, reused for the echoes
 * so that they measure round trips on an open connection. See peers.h. */
#include "agent/peers.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/json.h"
#include "base/log.h"
#include "base/mem.h"

struct cr_peers {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t wake;
	bool stopping;
	int interval_s, timeout_ms;
	cr_peers_list_cb list;
	void *arg;
	json_t *results; /* under mu */
};

struct body {
	char buf[256];
	size_t len;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct body *b = arg;
	size_t len = size * n, room = sizeof(b->buf) - 1 - b->len;
	memcpy(b->buf + b->len, p, len < room ? len : room);
	b->len += len < room ? len : room;
	b->buf[b->len] = 0;
	return len;
}

int cr_peer_probe(const char *host, int port, int timeout_ms, double *rtt_ms, char *err, size_t n)
{
	CURL *h = curl_easy_init();
	if (!h) {
		snprintf(err, n, "libcurl could not start");
		return -1;
	}
	char url[300];
	snprintf(url, sizeof(url), "http://%s:%d/probe?echo=corral", host, port);
	struct body b = { "", 0 };
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(h, CURLOPT_PROXY, "");
	double best = -1;
	int rc = 0;
	for (int i = 0; i < 3 && !rc; i++) {
		b.len = 0;
		CURLcode c = curl_easy_perform(h);
		long status = 0;
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
		if (c != CURLE_OK) {
			snprintf(err, n, "%s", curl_easy_strerror(c));
			rc = -1;
		} else if (status != 200 || !strstr(b.buf, "\"corral\"")) {
			snprintf(err, n, "%s:%d answered %ld, not as a Corral worker", host, port, status);
			rc = -1;
		} else {
			curl_off_t total_us = 0;
			curl_easy_getinfo(h, CURLINFO_TOTAL_TIME_T, &total_us);
			double t = (double)total_us / 1000.0;
			if (i > 0 && (best < 0 || t < best)) /* the echoes on the open connection */
				best = t;
		}
	}
	curl_easy_cleanup(h);
	if (!rc)
		*rtt_ms = best;
	return rc;
}

static void probe_all(struct cr_peers *p)
{
	json_t *list = NULL;
	if (p->list(p->arg, &list) != 0 || !json_is_array(list)) {
		json_decref(list);
		return; /* the server is away: keep the last results */
	}
	json_t *res = json_object();
	size_t i;
	json_t *peer;
	json_array_foreach(list, i, peer) {
		const char *id = cr_json_get_str(peer, "id", NULL), *addr = cr_json_get_str(peer, "address", NULL);
		if (!id || !addr)
			continue;
		double rtt;
		char why[256];
		json_t *r;
		if (cr_peer_probe(addr, (int)cr_json_get_int(peer, "port", 0), p->timeout_ms, &rtt, why, sizeof(why)) == 0)
			r = json_pack("{s:s,s:f}", "name", cr_json_get_str(peer, "name", ""), "rtt_ms", (double)(long)(rtt * 1000) / 1000);
		else
			r = json_pack("{s:s,s:s}", "name", cr_json_get_str(peer, "name", ""), "error", why);
		json_object_set_new(res, id, r);
	}
	json_decref(list);
	pthread_mutex_lock(&p->mu);
	json_decref(p->results);
	p->results = res;
	pthread_mutex_unlock(&p->mu);
}

static void *run(void *arg)
{
	struct cr_peers *p = arg;
	pthread_mutex_lock(&p->mu);
	while (!p->stopping) {
		pthread_mutex_unlock(&p->mu);
		probe_all(p);
		pthread_mutex_lock(&p->mu);
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += p->interval_s;
		while (!p->stopping && pthread_cond_timedwait(&p->wake, &p->mu, &until) == 0) {
		}
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

struct cr_peers *cr_peers_start(int interval_s, int timeout_ms, cr_peers_list_cb list, void *arg)
{
	struct cr_peers *p = cr_xcalloc(1, sizeof(*p));
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->wake, NULL);
	p->interval_s = interval_s > 0 ? interval_s : 30;
	p->timeout_ms = timeout_ms > 0 ? timeout_ms : 1000;
	p->list = list;
	p->arg = arg;
	p->results = json_object();
	pthread_create(&p->thread, NULL, run, p);
	return p;
}

json_t *cr_peers_results(struct cr_peers *p)
{
	pthread_mutex_lock(&p->mu);
	json_t *r = json_deep_copy(p->results);
	pthread_mutex_unlock(&p->mu);
	return r;
}

void cr_peers_stop(struct cr_peers *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stopping = true;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->mu);
	pthread_join(p->thread, NULL);
	json_decref(p->results);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->wake);
	free(p);
}
