/* replay.c: runs the frame decoder's fuzz target over every file of a corpus directory, for
 * builds without libFuzzer (and in CI on every run). Prints "N passed, 0 failed". */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv) {
  int i, n = 0;
  for (i = 1; i < argc; i++) {
    DIR *d = opendir(argv[i]);
    struct dirent *e;
    if (d == NULL) {
      perror(argv[i]);
      return 1;
    }
    while ((e = readdir(d)) != NULL) {
      char path[4096];
      FILE *f;
      long len;
      uint8_t *buf;
      if (e->d_name[0] == '.') continue;
      snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name);
      f = fopen(path, "rb");
      if (f == NULL) continue;
      fseek(f, 0, SEEK_END);
      len = ftell(f);
      fseek(f, 0, SEEK_SET);
      buf = malloc(len > 0 ? (size_t)len : 1);
      if (buf == NULL || fread(buf, 1, (size_t)len, f) != (size_t)len) {
        fprintf(stderr, "cannot read %s\n", path);
        return 1;
      }
      fclose(f);
      LLVMFuzzerTestOneInput(buf, (size_t)len);
      free(buf);
      n++;
    }
    closedir(d);
  }
  if (n == 0) {
    fprintf(stderr, "empty corpus\n");
    return 1;
  }
  printf("%d passed, 0 failed\n", n);
  return 0;
}
