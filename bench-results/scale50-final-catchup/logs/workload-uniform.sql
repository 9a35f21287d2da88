\set a random(1, :rows)
\set b random(1, :rows)
\set c random(1, :rows)
\set d random(1, :rows)
UPDATE public.bench_uniform SET v = v + 1 WHERE id IN (:a, :b, :c, :d);
