/* libnwfoo: a tiny shared library. The data table (generated at build time by
   setup.py) gives the library a realistic, mostly incompressible size. */
#include <stddef.h>
#include <stdint.h>

extern const unsigned char nwfoo_table[];
extern const size_t nwfoo_table_size;

int nwfoo_answer(void) {
    return 42;
}

int nwfoo_add(int a, int b) {
    return a + b;
}

/* FNV-1a over the table, so a caller can check the data it reads from the
   library against the code in it. */
uint32_t nwfoo_checksum(void) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < nwfoo_table_size; i++) {
        h ^= nwfoo_table[i];
        h *= 16777619u;
    }
    return h;
}
