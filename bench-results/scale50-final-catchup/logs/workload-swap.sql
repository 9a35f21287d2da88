\set a random(1, :rows)
\set b random(1, :rows)
BEGIN;
SELECT count(*) FROM (SELECT id FROM public.bench_swap WHERE id IN (:a, :b) ORDER BY id FOR UPDATE) locked;
SELECT code AS ca FROM public.bench_swap WHERE id = :a \gset
SELECT code AS cb FROM public.bench_swap WHERE id = :b \gset
UPDATE public.bench_swap SET code = -:ca WHERE id = :a;
UPDATE public.bench_swap SET code = :ca WHERE id = :b;
UPDATE public.bench_swap SET code = :cb WHERE id = :a;
END;
