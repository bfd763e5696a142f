build-scan/src/agent/peers.o: src/agent/peers.c src/agent/peers.h \
 src/base/json.h src/base/log.h src/base/mem.h
src/agent/peers.h:
src/base/json.h:
src/base/log.h:
src/base/mem.h:
