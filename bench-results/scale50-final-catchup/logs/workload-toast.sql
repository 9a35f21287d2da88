\set a random(1, :rows)
UPDATE public.bench_toast SET v = v + 1 WHERE id = :a;
