build-scan/src/http/probe.o: src/http/probe.c src/http/probe.h \
 src/base/mem.h
src/http/probe.h:
src/base/mem.h:
