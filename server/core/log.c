/* log.c - see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static enum xa_log_level current_level = XA_LOG_INFO;

void
xa_log_set_level(enum xa_log_level level)
{
    current_level = level;
}

void
xa_log(enum xa_log_level level, const char *module, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    if (level > current_level) {
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char line[2048];
    int off = snprintf(
        line, sizeof line,
        "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ", tm.tm_year + 1900,
        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
        ts.tv_nsec / 1000000, names[level], module);
    va_list ap;
    va_start(ap, fmt);
    if (off > 0 && (size_t)off < sizeof line) {
        vsnprintf(line + off, sizeof line - (size_t)off, fmt, ap);
    }
    va_end(ap);
    fprintf(stderr, "%s\n", line);
}
