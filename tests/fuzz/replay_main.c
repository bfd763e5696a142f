/* Replays a fuzz target over every file of a corpus directory, so that the
 * targets run in `make test` with any compiler; `make fuzz` links the same
 * targets with libFuzzer instead. */
#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
		return 2;
	}
	DIR *d = opendir(argv[1]);
	if (!d) {
		perror(argv[1]);
		return 1;
	}
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", argv[1], e->d_name);
		char *data = NULL;
		size_t len = 0;
		if (cr_file_read(path, 1 << 24, &data, &len, NULL) != 0)
			continue;
		LLVMFuzzerTestOneInput((const uint8_t *)data, len);
		free(data);
		n++;
	}
	closedir(d);
	printf("%s: %d inputs replayed\n", argv[1], n);
	return 0;
}
