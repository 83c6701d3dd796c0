/*-------------------------------------------------------------------------
 *
 * http.h
 *		The worker's HTTP engine: many POSTs at once on libcurl's multi
 *		interface, driven from the worker's wait loop.
 *
 *-------------------------------------------------------------------------
 */
#ifndef LARK_HTTP_H
#define LARK_HTTP_H

#include "lark_webhooks.h"

#include <curl/curl.h>

/*
 * One attempt at one delivery.  The worker fills in what to send; the
 * engine fills in what happened.  Everything hangs off its own memory
 * context, so freeing a request is one MemoryContextDelete.
 */
typedef struct LarkRequest
{
	dlist_node	node;			/* in the engine's running or done list */
	MemoryContext cxt;			/* holds this struct and its strings */
	CURL	   *easy;
	struct curl_slist *headers;

	/* What to send */
	char	   *delivery_id;
	char	   *webhook_id;
	char	   *event;
	char	   *url;
	char	   *body;			/* UTF-8 bytes, not NUL-terminated */
	size_t		body_len;
	char		signature[LARK_SIGNATURE_HEX_LEN + 1];
	int			attempt;		/* 1 for the first try */

	/* What happened */
	TimestampTz started_at;
	TimestampTz finished_at;
	long		http_status;	/* 0 when no status line arrived */
	CURLcode	result;
	char		errbuf[CURL_ERROR_SIZE];
	char		refusal[256];	/* why the address policy refused */
	char		excerpt[LARK_EXCERPT_MAX];
	size_t		excerpt_len;
} LarkRequest;

extern void lark_http_init(void);
extern pgsocket lark_http_socket(void);
extern LarkRequest *lark_http_new_request(MemoryContext parent);
extern void lark_http_start(LarkRequest *req);
extern void lark_http_progress(void);
extern long lark_http_timeout(void);
extern int	lark_http_running(void);
extern LarkRequest *lark_http_next_done(void);
extern bool lark_http_succeeded(LarkRequest *req);
extern const char *lark_http_error(LarkRequest *req);
extern void lark_http_abort_all(void);
extern void lark_http_free(LarkRequest *req);

#endif							/* LARK_HTTP_H */
