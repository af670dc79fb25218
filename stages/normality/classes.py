"""Names on a normality model's class axis besides the detector's vocabulary."""

BLOB = "moving region"  # a moving region no detection explains
UNKNOWN = "unknown class"  # a class id outside the vocabulary the model was fitted with
PERSON = "person"  # the class whose pose and gait are judged
