build-scan/src/agent/supervise.o: src/agent/supervise.c \
 src/agent/supervise.h src/agent/engines.h src/base/err.h \
 src/agent/files.h src/agent/diagnose.h src/base/json.h src/base/log.h \
 src/base/mem.h src/base/secret.h src/base/util.h src/http/client.h
src/agent/supervise.h:
src/agent/engines.h:
src/base/err.h:
src/agent/files.h:
src/agent/diagnose.h:
src/base/json.h:
src/base/log.h:
src/base/mem.h:
src/base/secret.h:
src/base/util.h:
src/http/client.h:
