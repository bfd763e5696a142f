/* SQLite schema migrations, numbered from 1 and applied in order at start.
 * Append new migrations; never edit one that has shipped. */
#include "store/schema.h"

#include <stddef.h>

const char *const cr_schema_sqlite[] = {
	/* 1: users, sessions, settings, workers */
	"CREATE TABLE users ("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  username TEXT NOT NULL UNIQUE,"
	"  password_hash TEXT NOT NULL,"
	"  role TEXT NOT NULL CHECK (role IN ('admin', 'user')),"
	"  created_ms INTEGER NOT NULL);"
	"CREATE TABLE sessions ("
	"  token_hash TEXT PRIMARY KEY,"
	"  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
	"  created_ms INTEGER NOT NULL,"
	"  expires_ms INTEGER NOT NULL);"
	"CREATE TABLE settings ("
	"  key TEXT PRIMARY KEY,"
	"  value TEXT NOT NULL);"
	"CREATE TABLE workers ("
	"  id TEXT PRIMARY KEY,"
	"  name TEXT NOT NULL UNIQUE,"
	"  secret_hash TEXT NOT NULL,"
	"  labels TEXT NOT NULL DEFAULT '{}',"
	"  address TEXT NOT NULL DEFAULT '',"
	"  port INTEGER NOT NULL DEFAULT 0,"
	"  created_ms INTEGER NOT NULL,"
	"  last_seen_ms INTEGER NOT NULL DEFAULT 0,"
	"  report TEXT);",
	/* 2: the dynamic half of the last report (light status reports) */
	"ALTER TABLE workers ADD COLUMN report_dynamic TEXT;",
	/* 3: models and their instances */
	"CREATE TABLE models ("
	"  id TEXT PRIMARY KEY,"
	"  name TEXT NOT NULL UNIQUE,"
	"  spec TEXT NOT NULL,"
	"  created_ms INTEGER NOT NULL,"
	"  updated_ms INTEGER NOT NULL);"
	"CREATE TABLE instances ("
	"  id TEXT PRIMARY KEY,"
	"  model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE,"
	"  placement TEXT NOT NULL,"
	"  state TEXT NOT NULL,"
	"  message TEXT NOT NULL DEFAULT '',"
	"  created_ms INTEGER NOT NULL,"
	"  updated_ms INTEGER NOT NULL);"
	"CREATE INDEX instances_model ON instances(model_id);",
	/* 4: API keys for the gateway (hashes only) */
	"CREATE TABLE api_keys ("
	"  id TEXT PRIMARY KEY,"
	"  name TEXT NOT NULL,"
	"  user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,"
	"  hash TEXT NOT NULL UNIQUE,"
	"  prefix TEXT NOT NULL,"
	"  models TEXT NOT NULL DEFAULT '[]',"
	"  rpm INTEGER NOT NULL DEFAULT 0,"
	"  tpm INTEGER NOT NULL DEFAULT 0,"
	"  expires_ms INTEGER NOT NULL DEFAULT 0,"
	"  created_ms INTEGER NOT NULL);",
	/* 5: gateway usage per day, key and model (names kept: keys and users may go) */
	"CREATE TABLE usage ("
	"  day TEXT NOT NULL,"
	"  key_id TEXT NOT NULL,"
	"  key_name TEXT NOT NULL,"
	"  user_id INTEGER NOT NULL,"
	"  username TEXT NOT NULL,"
	"  model TEXT NOT NULL,"
	"  requests INTEGER NOT NULL DEFAULT 0,"
	"  errors INTEGER NOT NULL DEFAULT 0,"
	"  prompt_tokens INTEGER NOT NULL DEFAULT 0,"
	"  completion_tokens INTEGER NOT NULL DEFAULT 0,"
	"  ttft_ms_sum INTEGER NOT NULL DEFAULT 0,"
	"  ttft_count INTEGER NOT NULL DEFAULT 0,"
	"  latency_ms_sum INTEGER NOT NULL DEFAULT 0,"
	"  PRIMARY KEY (day, key_id, model));"
	"CREATE INDEX usage_user ON usage(user_id, day);",
	/* 6: where an instance's engine serves, so that a restarted server routes at once */
	"ALTER TABLE instances ADD COLUMN endpoint TEXT;",
	/* 7: cordoned workers take no new placements (1: cordoned, 2: draining) */
	"ALTER TABLE workers ADD COLUMN cordoned INTEGER NOT NULL DEFAULT 0;",
	/* 8: the audit trail: who did what to what, from where, when */
	"CREATE TABLE audit ("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  at_ms INTEGER NOT NULL,"
	"  actor TEXT NOT NULL,"
	"  address TEXT NOT NULL,"
	"  action TEXT NOT NULL,"
	"  target TEXT NOT NULL,"
	"  detail TEXT NOT NULL DEFAULT '');"
	"CREATE INDEX audit_at ON audit(at_ms);",
	/* 9: limits an admin sets per user, and token quotas per key (JSON objects) */
	"ALTER TABLE users ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';"
	"ALTER TABLE api_keys ADD COLUMN quotas TEXT NOT NULL DEFAULT '{}';",
	/* 10: cluster events: workers joining and leaving, placements, instance states, with causes */
	"CREATE TABLE events ("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  at_ms INTEGER NOT NULL,"
	"  kind TEXT NOT NULL,"
	"  subject TEXT NOT NULL,"
	"  message TEXT NOT NULL,"
	"  detail TEXT NOT NULL DEFAULT '');"
	"CREATE INDEX events_at ON events(at_ms);",
	/* 11: several servers: workers' messages taken by followers for the
	 * leader, and the leader's watch payloads for the followers' streams */
	"CREATE TABLE worker_mail ("
	"  id INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  at_ms INTEGER NOT NULL,"
	"  worker_id TEXT NOT NULL,"
	"  kind TEXT NOT NULL,"
	"  body TEXT NOT NULL,"
	"  server TEXT NOT NULL DEFAULT '');"
	"CREATE TABLE worker_watch ("
	"  worker_id TEXT PRIMARY KEY,"
	"  seq INTEGER NOT NULL,"
	"  body TEXT NOT NULL);"
	"CREATE INDEX worker_watch_seq ON worker_watch(seq);",
	NULL,
};
