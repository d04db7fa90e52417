"""Reading results: reports and plots, comparisons with statistics, the verdict on the claim."""
