build-scan/src/http/relay.o: src/http/relay.c src/http/relay.h \
 src/base/map.h src/base/mem.h src/base/util.h src/http/server_impl.h \
 src/http/server.h
src/http/relay.h:
src/base/map.h:
src/base/mem.h:
src/base/util.h:
src/http/server_impl.h:
src/http/server.h:
