"""Images in: decoding every supported format safely, the one resize, and the input recipe
(`Preprocess`) a model travels with."""
