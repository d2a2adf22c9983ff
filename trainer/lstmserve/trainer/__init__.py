"""lstmserve trainer: fits Keras recurrent models and writes each, with what serving needs, to one .h5."""
