/*-------------------------------------------------------------------------
 *
 * lark_webhooks.h
 *		Declarations shared by the parts of lark_webhooks.
 *
 * The extension has five parts: module set-up and settings
 * (lark_webhooks.c), the SQL-callable helpers (functions.c), the HTTP
 * engine built on libcurl's multi interface (http.c), the outbound address
 * policy (netpolicy.c) and the background worker that ties them to the
 * deliveries table (worker.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef LARK_WEBHOOKS_H
#define LARK_WEBHOOKS_H

#include "postgres.h"

#include <sys/socket.h>

#include "datatype/timestamp.h"
#include "lib/ilist.h"
#include "storage/latch.h"
#include "storage/s_lock.h"

#define LARK_WEBHOOKS_VERSION "1.0"
#define LARK_USER_AGENT "lark-webhooks/" LARK_WEBHOOKS_VERSION

/* Bytes of a response body kept in delivery_attempts.response_excerpt. */
#define LARK_EXCERPT_MAX 1024

/* Length of a lowercase hex HMAC-SHA256 digest, without terminator. */
#define LARK_SIGNATURE_HEX_LEN 64

/* Settings (lark_webhooks.c) */
extern char *lark_database;
extern int	lark_max_concurrency;
extern int	lark_max_concurrency_per_webhook;
extern int	lark_timeout_ms;
extern char *lark_retry_delays;
extern int	lark_max_webhooks_per_account;
extern char *lark_allowed_networks;

/* The parsed form of lark_webhooks.retry_delays, kept by its assign hook. */
extern int	lark_retry_count;
extern int *lark_retry_delays_ms;

/* Shared state: how backends find the worker's latch. */
typedef struct LarkSharedState
{
	slock_t		mutex;
	pid_t		worker_pid;
	Latch	   *worker_latch;
} LarkSharedState;

extern LarkSharedState *lark_shared;

/* functions.c */
extern void lark_hmac_sha256_hex(const char *key, size_t keylen,
								 const char *data, size_t datalen,
								 char *hex);

/* netpolicy.c */
extern bool lark_address_from_text(const char *text,
								   struct sockaddr_storage *ss);
extern bool lark_address_allowed(const struct sockaddr *addr,
								 char *why, size_t whylen);
extern bool lark_parse_networks(const char *value, void **parsed,
								char **bad_entry);
extern void lark_set_allowed_networks(void *parsed);

/* worker.c */
extern PGDLLEXPORT void lark_worker_main(Datum main_arg);

#endif							/* LARK_WEBHOOKS_H */
