"""A minimal Python function: returns a greeting for the name in the event."""


def handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    return {"message": f"Hello, {name}!"}
