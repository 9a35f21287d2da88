\set a random(1, :rows)
UPDATE public.bench_rifull SET v = v + 1 WHERE a = :a;
