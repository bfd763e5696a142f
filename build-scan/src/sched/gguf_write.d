build-scan/src/sched/gguf_write.o: src/sched/gguf_write.c \
 src/sched/gguf_write.h src/sched/gguf.h src/base/err.h src/base/mem.h
src/sched/gguf_write.h:
src/sched/gguf.h:
src/base/err.h:
src/base/mem.h:
