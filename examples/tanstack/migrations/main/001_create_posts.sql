-- The posts of the example app: each one the JSON object it was created
-- with (its id and createdAt added), listed in the order they were made.
CREATE TABLE posts (
    id TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    body TEXT NOT NULL
);

CREATE INDEX posts_by_creation ON posts (created_at, id);
