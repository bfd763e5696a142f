build-scan/src/sched/gguf.o: src/sched/gguf.c src/sched/gguf.h \
 src/base/err.h src/base/map.h src/base/mem.h
src/sched/gguf.h:
src/base/err.h:
src/base/map.h:
src/base/mem.h:
