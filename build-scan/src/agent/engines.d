build-scan/src/agent/engines.o: src/agent/engines.c src/agent/engines.h \
 src/base/err.h src/base/json.h src/base/mem.h src/base/util.h
src/agent/engines.h:
src/base/err.h:
src/base/json.h:
src/base/mem.h:
src/base/util.h:
