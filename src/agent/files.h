/* Model files on a worker: the sources the server asks about (watch event
 * "sources"), what this node has at each (cr_modelfile / cr_fetch reports,
 * re-read when a file's size or mtime changes), and downloads of url sources
 * that instances placed here need (watch event "snapshot"), with progress.
 * Thread-safe: the watcher sets, the reporter reads. */
#ifndef CR_AGENT_FILES_H
#define CR_AGENT_FILES_H

#include <jansson.h>
#include <stdint.h>
#include <stdbool.h>

struct cr_files;

/* cache_dir: where downloads go (created on first use). */
struct cr_files *cr_files_new(const char *cache_dir);

/* Stop downloads (resumable later), wait for them, free. NULL is fine. */
void cr_files_free(struct cr_files *f);

/* The "sources" event's data: {"sources":[{"source","kind","sha256"?}]}. */
void cr_files_set_sources(struct cr_files *f, json_t *sources);

/* The "snapshot" event's data: {"instances":[...]}; url sources of these
 * instances are downloaded into the cache (kept: see cr_files_retry). */
void cr_files_set_instances(struct cr_files *f, json_t *snapshot);

/* Tries again the failed downloads of the last snapshot whose wait is over
 * (10 s after the first failure, doubling up to 5 minutes). Call it now
 * and then (the reporter does, each interval). */
void cr_files_retry(struct cr_files *f);

/* {"files":[report, ...]}, each with "source" and, for url sources being or
 * having been downloaded, "download":{"state","bytes","total","path"?,"message"?}.
 * Reads headers only for new or changed files. New reference. */
json_t *cr_files_report(struct cr_files *f);

/* Bytes still to download for the largest unfinished download, 0 when none
 * (what the disk check compares free space with). */
uint64_t cr_files_largest_download(struct cr_files *f);

/* The local path of a finished download of url (caller frees), or NULL. */
char *cr_files_local_path(struct cr_files *f, const char *url);

/* The cache directory's files: [{"file", "size", "source", "last_used",
 * "partial", "in_use"}] (in use: an instance of the last snapshot needs it,
 * or it is being downloaded). New reference. */
json_t *cr_files_cache(struct cr_files *f);

/* Remove the cache files named (a JSON array of names), or with names NULL
 * every one not in use; files in use are kept. Returns how many went. */
int cr_files_remove(struct cr_files *f, json_t *names);

/* --cache-max: past bytes, cr_files_evict removes the least recently used
 * files no instance uses (0: no limit). */
void cr_files_set_cache_max(struct cr_files *f, uint64_t bytes);
void cr_files_evict(struct cr_files *f);

/* Open a finished file of the cache for a peer: entry (a cache name), or
 * file inside the directory entry (a safetensors model's). *source gets the
 * source it was downloaded for (caller frees), *fd and *size the file.
 * -ENOENT for anything else (partial files, unknown names, paths). */
int cr_files_open_cached(struct cr_files *f, const char *entry, const char *file, char **source, int *fd,
			 uint64_t *size);

/* True once since the last call when sources or downloads changed. */
bool cr_files_take_changed(struct cr_files *f);

#endif
