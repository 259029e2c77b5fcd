-- duckdb-kql init data for tests/kusto_crosscheck.rs: one row per edge case, every type duckdb-kql emits.
CREATE TABLE T (
    id INTEGER,
    b BOOLEAN,
    i INTEGER,
    l BIGINT,
    r DOUBLE,
    d DECIMAL(18, 4),
    ts TIMESTAMP,
    span INTERVAL,
    g UUID,
    s VARCHAR,
    dyn JSON
);
INSERT INTO T VALUES
    (1, true, 42, 9223372036854775807, 1.5, 12.3456, TIMESTAMP '2026-01-01 00:00:00', INTERVAL 90 SECOND,
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'plain', '{"k":"v","n":[1,2,3]}'),
    (2, false, -7, -9223372036854775808, 'NaN'::DOUBLE, -0.5000, TIMESTAMP '2026-01-01 00:04:59.123456',
     INTERVAL '1 day 02:03:04.5', '00000000-0000-0000-0000-000000000000',
     'quote " backslash \ tab' || chr(9) || 'newline' || chr(10) || 'end', '"just a string"'),
    (3, true, 0, 0, 'Infinity'::DOUBLE, 0, TIMESTAMP '2026-01-01 00:05:00.000001', INTERVAL '-3 hours',
     'ffffffff-ffff-ffff-ffff-ffffffffffff', 'ünïcødé ✓ 𝄞 日本', '[1,"two",{"three":3},null,true]'),
    (4, false, 2147483647, 1, '-Infinity'::DOUBLE, 99999999999999.9999, TIMESTAMP '1999-12-31 23:59:59.999999',
     INTERVAL 0 SECOND, '123e4567-e89b-12d3-a456-426614174000', '', '123'),
    (5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    (6, true, -2147483648, 123456789012345, 2.5e-300, 1.0001, TIMESTAMP '2026-01-01 00:10:00', INTERVAL 1 MICROSECOND,
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', 'emoji 😀 and ''single''', '{"nested":{"deep":{"x":-1.25}}}');
