build-scan/src/base/map.o: src/base/map.c src/base/map.h src/base/mem.h
src/base/map.h:
src/base/mem.h:
