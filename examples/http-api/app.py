"""A small JSON API behind a function URL (payload format 2.0): items with
a name and an optional price, listed, read, created and deleted.

    GET    /items?limit=N   the items, oldest first (at most N)
    GET    /items/{id}      one item
    POST   /items           a new item from a JSON body {"name": ..., "price": ...}
    DELETE /items/{id}      removes an item

Errors are JSON too: 400 for a bad body or query, 404 for an unknown item
or path, 405 (with `Allow`) for a method a path does not take.

The items live in this module, so they last as long as the execution
environment: a new environment (a cold start, a second concurrent request)
starts empty, as on AWS. Real state belongs in a database.
"""

import base64
import itertools
import json
import math

ITEMS = {}  # id -> item, in creation order
IDS = itertools.count(1)


def response(status, body=None, headers=None):
    """A payload 2.0 response: the URL turns it into the HTTP answer."""
    out = {"statusCode": status, "headers": {"content-type": "application/json", **(headers or {})}}
    if body is not None:
        out["body"] = json.dumps(body)
    return out


def error(status, message, headers=None):
    return response(status, {"message": message}, headers)


def number(text):
    """The integer a path segment or query value spells in ASCII digits, if any."""
    return int(text) if text.isascii() and text.isdigit() else None


def list_items(event):
    limit = (event.get("queryStringParameters") or {}).get("limit")
    items = list(ITEMS.values())
    if limit is not None:
        if not number(limit):
            return error(400, "limit must be a positive integer")
        items = items[: number(limit)]
    return response(200, {"items": items, "total": len(ITEMS)})


def create_item(event):
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):  # a body sent without a text content type
        body = base64.b64decode(body).decode("utf-8", "replace")
    try:
        data = json.loads(body)
    except ValueError:
        return error(400, "the body must be JSON")
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        return error(400, "name is required (a non-empty string)")
    price = data.get("price")
    is_number = isinstance(price, (int, float)) and not isinstance(price, bool)
    if price is not None and not (is_number and math.isfinite(price) and price >= 0):
        return error(400, "price must be a non-negative number")
    item = {"id": next(IDS), "name": data["name"]}
    if price is not None:
        item["price"] = price
    ITEMS[item["id"]] = item
    return response(201, item, {"location": f"/items/{item['id']}"})


def get_item(event, item_id):
    item = ITEMS.get(number(item_id))
    return response(200, item) if item else error(404, f"item {item_id} not found")


def delete_item(event, item_id):
    item = ITEMS.get(number(item_id))
    if not item:
        return error(404, f"item {item_id} not found")
    del ITEMS[item["id"]]
    return response(204)


def handler(event, context):
    method = event["requestContext"]["http"]["method"]
    parts = [p for p in event["rawPath"].split("/") if p]
    if parts == ["items"]:
        routes = {"GET": list_items, "POST": create_item}
        args = ()
    elif len(parts) == 2 and parts[0] == "items":
        routes = {"GET": get_item, "DELETE": delete_item}
        args = (parts[1],)
    else:
        return error(404, f"no route for {event['rawPath']}")
    if method not in routes:
        return error(405, f"{method} is not allowed on {event['rawPath']}", {"allow": ", ".join(routes)})
    return routes[method](event, *args)
