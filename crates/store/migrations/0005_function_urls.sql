-- A function URL request names only its URL id (in its Host or path), so
-- the URL configurations inside each function's document are indexed here
-- too. Rewritten with the document, in the same transaction.
CREATE TABLE function_urls (
    url_id    TEXT PRIMARY KEY NOT NULL,
    name      TEXT NOT NULL,
    qualifier TEXT NOT NULL            -- '' for the unqualified function, else the alias
);
CREATE INDEX function_urls_by_name ON function_urls (name);

INSERT INTO function_urls (url_id, name, qualifier)
    SELECT json_extract(u.value, '$.url_id'), f.name, u.key
    FROM functions f, json_each(f.doc, '$.url_configs') u;
