/* timer.c - see timer.h. */
#include "timer.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "util.h"

struct timer {
    struct timer *next; /* sorted by 'when' */
    double when;        /* monotonic seconds */
    void (*fn)(void *ctx);
    void *ctx;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond;
static struct timer *timers;
static bool stopping, running;
static pthread_t thread;

static void *
timer_main(void *arg)
{
    XA_UNUSED(arg);
    pthread_mutex_lock(&lock);
    while (!stopping) {
        if (!timers) {
            pthread_cond_wait(&cond, &lock);
            continue;
        }
        double now = xa_monotonic();
        if (timers->when > now) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            double wait = timers->when - now;
            ts.tv_sec += (time_t)wait;
            ts.tv_nsec += (long)((wait - (double)(time_t)wait) * 1e9);
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&cond, &lock, &ts);
            continue;
        }
        struct timer *t = timers;
        timers = t->next;
        pthread_mutex_unlock(&lock);
        t->fn(t->ctx);
        free(t);
        pthread_mutex_lock(&lock);
    }
    /* Run what is left now rather than drop it: a timer may hold the
     * answer to a deferred call (a throttled login), which must still be
     * delivered, or at least released. */
    while (timers) {
        struct timer *t = timers;
        timers = t->next;
        pthread_mutex_unlock(&lock);
        t->fn(t->ctx);
        free(t);
        pthread_mutex_lock(&lock);
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

void
xa_timer_start(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&cond, &attr);
    pthread_condattr_destroy(&attr);
    stopping = false;
    running = true;
    pthread_create(&thread, NULL, timer_main, NULL);
}

void
xa_timer_stop(void)
{
    if (!running) {
        return;
    }
    pthread_mutex_lock(&lock);
    stopping = true;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&lock);
    pthread_join(thread, NULL);
    running = false;
}

void
xa_timer_after(double seconds, void (*fn)(void *ctx), void *ctx)
{
    struct timer *t = xa_calloc(1, sizeof *t);
    t->when = xa_monotonic() + seconds;
    t->fn = fn;
    t->ctx = ctx;
    pthread_mutex_lock(&lock);
    if (stopping) {
        /* a periodic job re-arming itself while we stop: let it end */
        pthread_mutex_unlock(&lock);
        free(t);
        return;
    }
    struct timer **pp = &timers;
    while (*pp && (*pp)->when <= t->when) {
        pp = &(*pp)->next;
    }
    t->next = *pp;
    *pp = t;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&lock);
}
