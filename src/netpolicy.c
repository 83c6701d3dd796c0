/*-------------------------------------------------------------------------
 *
 * netpolicy.c
 *		Which addresses the worker may connect to.
 *
 * A webhook URL is chosen by a user, so by default the worker refuses to
 * reach addresses that only make sense inside the server's own network:
 * loopback, private, shared (CGNAT), link-local (cloud metadata included),
 * multicast, reserved and unspecified ranges, in IPv4 and IPv6.  IPv6
 * addresses that embed an IPv4 address are judged by that address.
 * lark_webhooks.allowed_networks opens chosen ranges again.
 *
 * The check runs on the address actually resolved, just before libcurl
 * opens the socket, so a host name that resolves to 127.0.0.1 is refused
 * as surely as the literal address.
 *
 *-------------------------------------------------------------------------
 */
#include "lark_webhooks.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

typedef struct LarkNetwork
{
	int			family;			/* AF_INET or AF_INET6 */
	int			bits;			/* prefix length */
	unsigned char addr[16];		/* network address, 4 or 16 bytes used */
} LarkNetwork;

typedef struct LarkNetworkList
{
	int			count;
	LarkNetwork nets[FLEXIBLE_ARRAY_MEMBER];
} LarkNetworkList;

/* Ranges refused unless allowed, with the words the refusal uses. */
typedef struct RefusedRange
{
	const char *cidr;
	const char *what;
} RefusedRange;

static const RefusedRange refused_ranges[] = {
	{"0.0.0.0/8", "unspecified"},
	{"10.0.0.0/8", "private"},
	{"100.64.0.0/10", "shared (carrier-grade NAT)"},
	{"127.0.0.0/8", "loopback"},
	{"169.254.0.0/16", "link-local"},
	{"172.16.0.0/12", "private"},
	{"192.0.0.0/24", "reserved"},
	{"192.168.0.0/16", "private"},
	{"198.18.0.0/15", "reserved"},
	{"224.0.0.0/4", "multicast"},
	{"240.0.0.0/4", "reserved"},
	{"::/128", "unspecified"},
	{"::1/128", "loopback"},
	{"fc00::/7", "private (unique local)"},
	{"fe80::/10", "link-local"},
	{"fec0::/10", "site-local"},
	{"ff00::/8", "multicast"},
};

/* The parsed allowed_networks, owned by the GUC machinery. */
static LarkNetworkList *allowed = NULL;

/* refused_ranges, parsed on first use. */
static LarkNetwork refused[lengthof(refused_ranges)];
static bool refused_parsed = false;

/*
 * Parse "address/bits" (or a bare address, meaning one host) into net.
 * Returns false on anything else.
 */
static bool
parse_network(const char *text, LarkNetwork *net)
{
	char		addr[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(text, '/');
	size_t		addrlen = slash ? (size_t) (slash - text) : strlen(text);
	int			maxbits;

	if (addrlen == 0 || addrlen >= sizeof(addr))
		return false;
	memcpy(addr, text, addrlen);
	addr[addrlen] = '\0';

	memset(net, 0, sizeof(*net));
	if (inet_pton(AF_INET, addr, net->addr) == 1)
	{
		net->family = AF_INET;
		maxbits = 32;
	}
	else if (inet_pton(AF_INET6, addr, net->addr) == 1)
	{
		net->family = AF_INET6;
		maxbits = 128;
	}
	else
		return false;

	net->bits = maxbits;
	if (slash)
	{
		char	   *end;
		long		bits;

		errno = 0;
		bits = strtol(slash + 1, &end, 10);
		if (errno != 0 || end == slash + 1 || *end != '\0' ||
			bits < 0 || bits > maxbits)
			return false;
		net->bits = (int) bits;
	}
	return true;
}

/* Does addr (4 or 16 bytes, per family) fall inside net? */
static bool
network_contains(const LarkNetwork *net, int family, const unsigned char *addr)
{
	int			full = net->bits / 8;
	int			rest = net->bits % 8;

	if (net->family != family)
		return false;
	if (memcmp(net->addr, addr, full) != 0)
		return false;
	if (rest != 0)
	{
		unsigned char mask = (unsigned char) (0xFF << (8 - rest));

		if ((net->addr[full] & mask) != (addr[full] & mask))
			return false;
	}
	return true;
}

/*
 * Parse a comma-separated list of networks into a malloc'd list suitable
 * as a GUC "extra".  On a bad entry, returns false and points *bad_entry at
 * a palloc'd copy of it.
 */
bool
lark_parse_networks(const char *value, void **parsed, char **bad_entry)
{
	char	   *copy = pstrdup(value ? value : "");
	LarkNetworkList *list;
	int			capacity = 1;
	char	   *tok;
	char	   *save = NULL;

	for (const char *p = copy; *p; p++)
		if (*p == ',')
			capacity++;

	/* A GUC "extra" must come from malloc, not palloc. */
	list = malloc(offsetof(LarkNetworkList, nets) +
				  sizeof(LarkNetwork) * capacity);
	if (list == NULL)
	{
		pfree(copy);
		return false;
	}
	list->count = 0;

	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
	{
		char	   *end;

		while (isspace((unsigned char) *tok))
			tok++;
		end = tok + strlen(tok);
		while (end > tok && isspace((unsigned char) end[-1]))
			*--end = '\0';
		if (*tok == '\0')
			continue;

		if (!parse_network(tok, &list->nets[list->count]))
		{
			*bad_entry = pstrdup(tok);
			free(list);
			pfree(copy);
			return false;
		}
		list->count++;
	}

	pfree(copy);
	*parsed = list;
	return true;
}

/*
 * Fill *ss from a literal IPv4 or IPv6 address; false if text is neither.
 */
bool
lark_address_from_text(const char *text, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, text, &((struct sockaddr_in *) ss)->sin_addr) == 1)
		ss->ss_family = AF_INET;
	else if (inet_pton(AF_INET6, text,
					   &((struct sockaddr_in6 *) ss)->sin6_addr) == 1)
		ss->ss_family = AF_INET6;
	else
		return false;
	return true;
}

void
lark_set_allowed_networks(void *parsed)
{
	allowed = (LarkNetworkList *) parsed;
}

/*
 * May the worker connect to addr?  When not, writes the reason into why.
 */
bool
lark_address_allowed(const struct sockaddr *addr, char *why, size_t whylen)
{
	unsigned char bytes[16];
	int			family;
	char		shown[INET6_ADDRSTRLEN];

	if (!refused_parsed)
	{
		for (int i = 0; i < lengthof(refused_ranges); i++)
			if (!parse_network(refused_ranges[i].cidr, &refused[i]))
				elog(ERROR, "bad built-in network \"%s\"",
					 refused_ranges[i].cidr);
		refused_parsed = true;
	}

	if (addr->sa_family == AF_INET)
	{
		family = AF_INET;
		memcpy(bytes, &((const struct sockaddr_in *) addr)->sin_addr, 4);
	}
	else if (addr->sa_family == AF_INET6)
	{
		static const unsigned char v4mapped[12] =
		{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};

		family = AF_INET6;
		memcpy(bytes, &((const struct sockaddr_in6 *) addr)->sin6_addr, 16);

		/* judge ::ffff:a.b.c.d by a.b.c.d */
		if (memcmp(bytes, v4mapped, sizeof(v4mapped)) == 0)
		{
			family = AF_INET;
			memmove(bytes, bytes + 12, 4);
		}
	}
	else
	{
		snprintf(why, whylen, "address family %d is not supported",
				 addr->sa_family);
		return false;
	}

	if (allowed != NULL)
		for (int i = 0; i < allowed->count; i++)
			if (network_contains(&allowed->nets[i], family, bytes))
				return true;

	for (int i = 0; i < lengthof(refused_ranges); i++)
	{
		if (network_contains(&refused[i], family, bytes))
		{
			inet_ntop(family, bytes, shown, sizeof(shown));
			snprintf(why, whylen,
					 "%s is a %s address (%s), which lark_webhooks.allowed_networks does not allow",
					 shown, refused_ranges[i].what, refused_ranges[i].cidr);
			return false;
		}
	}
	return true;
}
