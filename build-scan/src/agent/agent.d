build-scan/src/agent/agent.o: src/agent/agent.c src/agent/agent.h \
 src/agent/detect.h src/agent/engines.h src/base/err.h src/agent/files.h \
 src/agent/peers.h src/agent/supervise.h src/agent/report.h \
 src/checks/checks.h src/base/json.h src/base/log.h src/base/mem.h \
 src/base/secret.h src/base/sse.h src/base/buf.h src/base/util.h \
 src/http/client.h src/http/server.h
src/agent/agent.h:
src/agent/detect.h:
src/agent/engines.h:
src/base/err.h:
src/agent/files.h:
src/agent/peers.h:
src/agent/supervise.h:
src/agent/report.h:
src/checks/checks.h:
src/base/json.h:
src/base/log.h:
src/base/mem.h:
src/base/secret.h:
src/base/sse.h:
src/base/buf.h:
src/base/util.h:
src/http/client.h:
src/http/server.h:
