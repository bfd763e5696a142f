build-scan/src/agent/detect_resources.o: src/agent/detect_resources.c \
 src/agent/detect.h src/base/err.h src/base/json.h src/base/util.h
src/agent/detect.h:
src/base/err.h:
src/base/json.h:
src/base/util.h:
