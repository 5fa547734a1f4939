-- What each map of each encoder is (CNN conv<k>.<map>, identity image, or a filter bank's filter and parameters); join with features USING (encoder, layer, map).
CREATE OR REPLACE VIEW encoder_maps AS SELECT * FROM {{source:encoder_maps}};
