/*-------------------------------------------------------------------------
 *
 * http.c
 *		Many HTTP POSTs at once, on libcurl's multi interface.
 *
 * libcurl tells us, through its socket callback, which sockets it wants
 * watched; we keep those in an epoll set of our own.  The epoll descriptor
 * is itself pollable, so the worker waits on one WaitEventSet holding its
 * latch, postmaster death and that descriptor: a ready socket, a latch set
 * by a committing transaction, and libcurl's next timer all end the same
 * wait.  After a wait, lark_http_progress() hands the ready sockets and
 * any expired timer to libcurl and collects finished transfers.
 *
 * Connections are pooled by the multi handle and reused for the next
 * request to the same host.  A response body is read only up to the
 * excerpt we keep; after that the transfer is ended on our side, since the
 * status line already decided the outcome.
 *
 *-------------------------------------------------------------------------
 */
#include "lark_webhooks.h"

#include <netinet/in.h>
#include <sys/epoll.h>

#include "http.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

static CURLM *multi = NULL;
static int	epoll_fd = -1;

/* When libcurl wants lark_http_progress() called, or 0 for never. */
static TimestampTz timer_deadline = 0;

static dlist_head running_requests = DLIST_STATIC_INIT(running_requests);
static dlist_head done_requests = DLIST_STATIC_INIT(done_requests);
static int	n_running = 0;

/*
 * Idle easy handles, kept for the next request.  A reset handle keeps its
 * DNS and TLS session caches, which a fresh one would have to rebuild.
 */
static CURL **idle_handles = NULL;
static int	n_idle_handles = 0;
#define LARK_MAX_IDLE_HANDLES 1024

/* CURLMOPT_SOCKETFUNCTION: keep our epoll set in step with libcurl's wishes. */
static int
socket_callback(CURL *easy, curl_socket_t fd, int what, void *userp,
				void *socketp)
{
	struct epoll_event ev;

	if (what == CURL_POLL_REMOVE)
	{
		/* The descriptor may already be closed; that removed it too. */
		(void) epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, NULL);
		return 0;
	}

	memset(&ev, 0, sizeof(ev));
	ev.data.fd = fd;
	if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
		ev.events |= EPOLLIN;
	if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
		ev.events |= EPOLLOUT;

	if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fd, &ev) != 0 &&
		(errno != ENOENT || epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0))
	{
		/* libcurl then times the transfer out; say why in the log. */
		elog(WARNING, "could not watch socket %d: %m", (int) fd);
		return -1;
	}
	return 0;
}

/* CURLMOPT_TIMERFUNCTION: remember when libcurl next wants to run. */
static int
timer_callback(CURLM *m, long timeout_ms, void *userp)
{
	if (timeout_ms < 0)
		timer_deadline = 0;
	else
		timer_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													 timeout_ms);
	return 0;
}

/*
 * CURLOPT_WRITEFUNCTION: keep the first LARK_EXCERPT_MAX bytes of the
 * response body.  Returning less than we were given ends the transfer,
 * which lark_http_succeeded() accounts for.
 */
static size_t
write_callback(char *data, size_t size, size_t nmemb, void *userp)
{
	LarkRequest *req = (LarkRequest *) userp;
	size_t		len = size * nmemb;
	size_t		room = LARK_EXCERPT_MAX - req->excerpt_len;
	size_t		take = Min(len, room);

	memcpy(req->excerpt + req->excerpt_len, data, take);
	req->excerpt_len += take;
	return req->excerpt_len < LARK_EXCERPT_MAX ? len : take;
}

/*
 * CURLOPT_OPENSOCKETFUNCTION: the address policy, applied to the address
 * libcurl is about to connect to.
 */
static curl_socket_t
opensocket_callback(void *clientp, curlsocktype purpose,
					struct curl_sockaddr *address)
{
	LarkRequest *req = (LarkRequest *) clientp;

	if (!lark_address_allowed(&address->addr, req->refusal,
							  sizeof(req->refusal)))
		return CURL_SOCKET_BAD;

	req->refusal[0] = '\0';
	return socket(address->family, address->socktype, address->protocol);
}

/*
 * CURLOPT_PREREQFUNCTION: the address policy again, for every request,
 * just before it is sent.  A pooled connection is reused without opening
 * a socket, so without this a connection opened while its range was
 * allowed would outlive a narrower lark_webhooks.allowed_networks.
 */
static int
prereq_callback(void *clientp, char *primary_ip, char *local_ip,
				int primary_port, int local_port)
{
	LarkRequest *req = (LarkRequest *) clientp;
	struct sockaddr_storage ss;

	if (!lark_address_from_text(primary_ip, &ss))
	{
		snprintf(req->refusal, sizeof(req->refusal),
				 "the peer address \"%s\" could not be checked", primary_ip);
		return CURL_PREREQFUNC_ABORT;
	}

	if (!lark_address_allowed((struct sockaddr *) &ss, req->refusal,
							  sizeof(req->refusal)))
		return CURL_PREREQFUNC_ABORT;
	return CURL_PREREQFUNC_OK;
}

/*
 * Set up libcurl, the multi handle and our epoll set.  Called once, when
 * the worker starts.
 */
void
lark_http_init(void)
{
	struct sockaddr_in probe;
	char		why[256];
	CURLcode	rc;

	rc = curl_global_init(CURL_GLOBAL_ALL);
	if (rc != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not initialize libcurl"),
				 errdetail("%s", curl_easy_strerror(rc))));

	multi = curl_multi_init();
	if (multi == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl multi handle")));
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_callback);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_callback);

	epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (epoll_fd < 0)
		ereport(ERROR,
				(errcode_for_socket_access(),
				 errmsg("could not create epoll set: %m")));

	idle_handles = MemoryContextAlloc(TopMemoryContext,
									  sizeof(CURL *) * LARK_MAX_IDLE_HANDLES);

	/* Parse the built-in refused ranges now, not inside a libcurl callback. */
	memset(&probe, 0, sizeof(probe));
	probe.sin_family = AF_INET;
	(void) lark_address_allowed((struct sockaddr *) &probe, why, sizeof(why));
}

/* The descriptor to wait on: readable when any transfer's socket is ready. */
pgsocket
lark_http_socket(void)
{
	return epoll_fd;
}

/* A new, empty request in its own memory context under parent. */
LarkRequest *
lark_http_new_request(MemoryContext parent)
{
	MemoryContext cxt;
	LarkRequest *req;

	cxt = AllocSetContextCreate(parent, "lark_webhooks request",
								ALLOCSET_SMALL_SIZES);
	req = MemoryContextAllocZero(cxt, sizeof(LarkRequest));
	req->cxt = cxt;
	return req;
}

/* Append a header line, or fail loudly: a request without it is wrong. */
static struct curl_slist *
add_header(struct curl_slist *list, const char *name, const char *value)
{
	char		line[256];
	struct curl_slist *result;

	snprintf(line, sizeof(line), "%s: %s", name, value);
	result = curl_slist_append(list, line);
	explicit_bzero(line, sizeof(line));
	if (result == NULL)
	{
		curl_slist_free_all(list);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	}
	return result;
}

/*
 * Send req: build its headers, configure an easy handle and add it to the
 * multi handle.  The request's clock, and its timeout, start now.
 */
void
lark_http_start(LarkRequest *req)
{
	CURL	   *easy;
	struct curl_slist *headers = NULL;
	CURLMcode	mrc;

	if (n_idle_handles > 0)
	{
		easy = idle_handles[--n_idle_handles];
		curl_easy_reset(easy);
	}
	else if ((easy = curl_easy_init()) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl handle")));

	headers = add_header(headers, "Content-Type", "application/json");
	headers = add_header(headers, "X-Lark-Signature", req->signature);
	headers = add_header(headers, "X-Lark-Event", req->event);
	headers = add_header(headers, "X-Lark-Delivery", req->delivery_id);
	/* No "Expect: 100-continue" round trip before the body. */
	headers = add_header(headers, "Expect", "");
	req->headers = headers;
	req->easy = easy;

	curl_easy_setopt(easy, CURLOPT_PRIVATE, req);
	curl_easy_setopt(easy, CURLOPT_URL, req->url);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_PROXY, "");
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) lark_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long) lark_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, LARK_USER_AGENT);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
					 (curl_off_t) req->body_len);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, write_callback);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, opensocket_callback);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, req);
	curl_easy_setopt(easy, CURLOPT_PREREQFUNCTION, prereq_callback);
	curl_easy_setopt(easy, CURLOPT_PREREQDATA, req);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, req->errbuf);
	req->errbuf[0] = '\0';

	req->started_at = GetCurrentTimestamp();
	mrc = curl_multi_add_handle(multi, easy);
	if (mrc != CURLM_OK)
	{
		/* Report it as this attempt's failure rather than losing it. */
		req->result = CURLE_FAILED_INIT;
		strlcpy(req->errbuf, curl_multi_strerror(mrc), sizeof(req->errbuf));
		req->finished_at = GetCurrentTimestamp();
		dlist_push_tail(&done_requests, &req->node);
		return;
	}
	dlist_push_tail(&running_requests, &req->node);
	n_running++;
}

/* Move every transfer libcurl reports finished to the done list. */
static void
collect_finished(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		LarkRequest *req;

		if (msg->msg != CURLMSG_DONE)
			continue;

		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &req);
		req->result = msg->data.result;
		req->finished_at = GetCurrentTimestamp();
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE,
						  &req->http_status);

		curl_multi_remove_handle(multi, msg->easy_handle);
		dlist_delete(&req->node);
		n_running--;
		dlist_push_tail(&done_requests, &req->node);
	}
}

/*
 * Let libcurl act on every ready socket and, if its timer has expired, on
 * its timeouts.  Never blocks.
 */
void
lark_http_progress(void)
{
	struct epoll_event events[64];
	int			nready;
	int			still_running;

	if (multi == NULL)
		return;

	do
	{
		nready = epoll_wait(epoll_fd, events, lengthof(events), 0);
		if (nready < 0 && errno != EINTR)
			elog(ERROR, "epoll_wait failed: %m");

		for (int i = 0; i < nready; i++)
		{
			int			flags = 0;

			if (events[i].events & EPOLLIN)
				flags |= CURL_CSELECT_IN;
			if (events[i].events & EPOLLOUT)
				flags |= CURL_CSELECT_OUT;
			if (events[i].events & (EPOLLERR | EPOLLHUP))
				flags |= CURL_CSELECT_ERR;
			curl_multi_socket_action(multi, events[i].data.fd, flags,
									 &still_running);
		}
	} while (nready == lengthof(events));

	if (timer_deadline != 0 && GetCurrentTimestamp() >= timer_deadline)
	{
		timer_deadline = 0;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0,
								 &still_running);
	}

	collect_finished();
}

/*
 * Milliseconds until libcurl's timer expires (rounded up, so that we do not
 * wake a moment early and spin), or -1 when it has none.
 */
long
lark_http_timeout(void)
{
	TimestampTz now;

	if (timer_deadline == 0)
		return -1;
	now = GetCurrentTimestamp();
	if (now >= timer_deadline)
		return 0;
	return (long) ((timer_deadline - now + 999) / 1000);
}

int
lark_http_running(void)
{
	return n_running;
}

/* Take the next finished request, or NULL when there is none. */
LarkRequest *
lark_http_next_done(void)
{
	if (dlist_is_empty(&done_requests))
		return NULL;
	return dlist_container(LarkRequest, node,
						   dlist_pop_head_node(&done_requests));
}

/*
 * Did a status line arrive and the transfer end without a transport error?
 * A transfer we cut short because the excerpt was full counts: the status
 * line had arrived by then.
 */
static bool
response_complete(LarkRequest *req)
{
	return req->result == CURLE_OK ||
		(req->result == CURLE_WRITE_ERROR &&
		 req->excerpt_len == LARK_EXCERPT_MAX);
}

/* Did the receiver accept the delivery?  That takes a 2xx status. */
bool
lark_http_succeeded(LarkRequest *req)
{
	return response_complete(req) &&
		req->http_status >= 200 && req->http_status < 300;
}

/* Why an attempt failed, as stored in last_error; NULL if it succeeded. */
const char *
lark_http_error(LarkRequest *req)
{
	if (lark_http_succeeded(req))
		return NULL;
	if (req->refusal[0] != '\0')
		return psprintf("connection refused by lark_webhooks: %s",
						req->refusal);
	if (response_complete(req))
		return psprintf("receiver answered with HTTP status %ld",
						req->http_status);
	if (req->errbuf[0] != '\0')
		return req->errbuf;
	return curl_easy_strerror(req->result);
}

/* Release a request and keep its easy handle for the next one. */
void
lark_http_free(LarkRequest *req)
{
	if (req->easy != NULL)
	{
		if (n_idle_handles < LARK_MAX_IDLE_HANDLES)
			idle_handles[n_idle_handles++] = req->easy;
		else
			curl_easy_cleanup(req->easy);
	}
	if (req->headers != NULL)
		curl_slist_free_all(req->headers);
	explicit_bzero(req->signature, sizeof(req->signature));
	MemoryContextDelete(req->cxt);
}

/*
 * Abandon every request, running or done, without recording anything.
 * Used when the worker starts over after an error; the deliveries are
 * still in_flight in the table and are queued again.
 */
void
lark_http_abort_all(void)
{
	LarkRequest *req;
	dlist_mutable_iter iter;

	dlist_foreach_modify(iter, &running_requests)
	{
		req = dlist_container(LarkRequest, node, iter.cur);
		curl_multi_remove_handle(multi, req->easy);
		dlist_delete(&req->node);
		lark_http_free(req);
	}
	n_running = 0;

	while ((req = lark_http_next_done()) != NULL)
		lark_http_free(req);
}
