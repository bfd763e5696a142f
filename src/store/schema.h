/* Numbered schema migrations per backend: element i is migration i+1, the
 * array ends with NULL. */
#ifndef CR_STORE_SCHEMA_H
#define CR_STORE_SCHEMA_H

extern const char *const cr_schema_sqlite[];
extern const char *const cr_schema_pg[];

#endif
