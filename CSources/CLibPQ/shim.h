/* libpq's client header, for AegisPQ (pq.c). Its directory
 * (/usr/include/postgresql on Debian) comes from `pkg-config libpq`. */
#include <libpq-fe.h>
