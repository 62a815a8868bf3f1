/* log.h - leveled logging to stderr.  Lines carry a timestamp, the level
 * and the module; never log passwords or session references. */
#ifndef XA_LOG_H
#define XA_LOG_H

#include "util.h"

enum xa_log_level { XA_LOG_ERR, XA_LOG_WARN, XA_LOG_INFO, XA_LOG_DEBUG };

void xa_log_set_level(enum xa_log_level level);
void xa_log(enum xa_log_level level, const char *module, const char *fmt, ...)
    XA_PRINTF(3, 4);

#define xa_log_err(m, ...)   xa_log(XA_LOG_ERR, m, __VA_ARGS__)
#define xa_log_warn(m, ...)  xa_log(XA_LOG_WARN, m, __VA_ARGS__)
#define xa_log_info(m, ...)  xa_log(XA_LOG_INFO, m, __VA_ARGS__)
#define xa_log_debug(m, ...) xa_log(XA_LOG_DEBUG, m, __VA_ARGS__)

#endif
