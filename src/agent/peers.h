/* Peer probes: a worker measures, by itself, whether it reaches the other
 * workers and how long a round trip takes, through their probe endpoint
 * (GET /probe on the worker port): a TCP connect, then short echoes on the
 * same connection. Results travel in the status report ("peers") and feed
 * the group checks (reach, rtt). */
#ifndef CR_AGENT_PEERS_H
#define CR_AGENT_PEERS_H

#include <jansson.h>
#include <stddef.h>

struct cr_peers;

/* The peers to probe now, as [{"id", "name", "address", "port"}]; 0 with
 * *list set (new reference), or an error code. Called on the prober thread. */
typedef int (*cr_peers_list_cb)(void *arg, json_t **list);

/* Start a thread that every interval_s fetches the list and probes each peer
 * (at most timeout_ms per peer). */
struct cr_peers *cr_peers_start(int interval_s, int timeout_ms, cr_peers_list_cb list, void *arg);

/* The last results: {peer id: {"name", "rtt_ms"} or {"name", "error"}} (new reference). */
json_t *cr_peers_results(struct cr_peers *p);

/* Stop the thread (within timeout_ms) and free. NULL allowed. */
void cr_peers_stop(struct cr_peers *p);

/* Probe host:port once: connect, then the shorter of two echo round trips on
 * that connection, in ms. Returns 0, or -1 with why in err (the connection refused, a
 * timeout, an answer that is not a worker's). */
int cr_peer_probe(const char *host, int port, int timeout_ms, double *rtt_ms, char *err, size_t n);

#endif
