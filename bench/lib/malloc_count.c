/* bench/lib/malloc_count.c: counts heap allocations of a proxy under load, for issue 6's target
 * "no heap allocation per request or per frame in steady state".
 *
 *   LD_PRELOAD=malloc_count.so MALLOC_COUNT_FILE=/tmp/x.cnt limpet -c ...
 *
 * The counters live in a shared mapping of MALLOC_COUNT_FILE (8-byte little-endian words:
 * malloc, calloc, realloc, aligned, free), so bench/run.sh reads them from outside at any moment
 * and forked workers (nginx) add to the same words. The real work is glibc's __libc_* entry
 * points: no dlsym, so nothing here allocates while counting.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);
extern void __libc_free(void *p);

enum { kMalloc, kCalloc, kRealloc, kAligned, kFree, kCounters };

static uint64_t *counters;

__attribute__((constructor)) static void malloc_count_init(void) {
  const char *path = getenv("MALLOC_COUNT_FILE");
  if (path == NULL) return;
  int fd = open(path, O_RDWR | O_CREAT, 0644);
  if (fd < 0) return;
  if (ftruncate(fd, 4096) == 0) {
    void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m != MAP_FAILED) counters = m;
  }
  close(fd);
}

static inline void count(int which) {
  if (counters != NULL) __atomic_add_fetch(&counters[which], 1, __ATOMIC_RELAXED);
}

void *malloc(size_t size) {
  count(kMalloc);
  return __libc_malloc(size);
}

void *calloc(size_t n, size_t size) {
  count(kCalloc);
  return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size) {
  count(kRealloc);
  return __libc_realloc(p, size);
}

void free(void *p) {
  if (p != NULL) count(kFree);
  __libc_free(p);
}

void *memalign(size_t alignment, size_t size) {
  count(kAligned);
  return __libc_memalign(alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size) {
  count(kAligned);
  return __libc_memalign(alignment, size);
}

int posix_memalign(void **out, size_t alignment, size_t size) {
  count(kAligned);
  void *p = __libc_memalign(alignment, size);
  if (p == NULL) return 12; /* ENOMEM */
  *out = p;
  return 0;
}
